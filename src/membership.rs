//! Who may change a room's members. Every store backend applies these rules inside the
//! transaction that makes the change, to what that transaction reads, so a rule is never
//! checked against a room that has changed since.

use crate::model::{Refusal, UserId};

/// What the rules need to know about a room.
#[derive(Debug, Clone, Copy)]
pub struct RoomFacts {
    pub is_direct: bool,
    pub creator: Option<UserId>,
}

/// How many rooms one user may be in, and how many of them one other user may have put
/// them in (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct RoomCaps {
    pub max_rooms_per_user: u32,
    pub max_rooms_added_by_one_user: u32,
}

/// What the caps need to know about one user joining a room at another's hand.
#[derive(Debug, Clone, Copy)]
pub struct Joining {
    /// Rooms the joining user is in now.
    pub rooms: u32,
    /// Of those, the ones the acting user put them in.
    pub from_actor: u32,
}

/// `actor` puts users in a room (creating it, or adding one): the actor must have room for
/// one more room themselves when creating it (`actor_rooms`), and each user joining must have
/// room for one more, and not yet be in `max_rooms_added_by_one_user` rooms by the actor's
/// hand. So no user can fill another's room list, and a user who is put in rooms against
/// their will can leave them and, past the cap, is not put in more.
pub fn may_join(
    caps: RoomCaps,
    actor_rooms: Option<u32>,
    joining: &[Joining],
) -> Result<(), Refusal> {
    if actor_rooms.is_some_and(|n| n >= caps.max_rooms_per_user) {
        return Err(Refusal::YouHaveTooManyRooms);
    }
    if joining.iter().any(|j| j.rooms >= caps.max_rooms_per_user) {
        return Err(Refusal::TheyHaveTooManyRooms);
    }
    if joining
        .iter()
        .any(|j| j.from_actor >= caps.max_rooms_added_by_one_user)
    {
        return Err(Refusal::TooManyRoomsFromYou);
    }
    Ok(())
}

/// `by` adds someone to a room. A non-member learns nothing about the room, not even that it
/// is a direct one; direct rooms keep their two members; only active accounts join.
pub fn may_add(room: RoomFacts, by_is_member: bool, user_is_active: bool) -> Result<(), Refusal> {
    if !by_is_member {
        Err(Refusal::NotFound)
    } else if room.is_direct {
        Err(Refusal::DirectRoom)
    } else if !user_is_active {
        Err(Refusal::NoSuchUser)
    } else {
        Ok(())
    }
}

/// `by` removes `user` from a room: anyone may leave any room (a direct room too: that
/// declines it for good, as nobody can be added to a direct room and asking for the pair's
/// room again finds this one), and a group's admins may remove anyone. Both must be members.
pub fn may_remove(
    room: RoomFacts,
    by: UserId,
    user: UserId,
    both_members: bool,
    by_is_admin: bool,
) -> Result<(), Refusal> {
    if !both_members {
        Err(Refusal::NotFound)
    } else if user == by {
        Ok(())
    } else if room.is_direct {
        Err(Refusal::DirectRoom)
    } else if !by_is_admin {
        Err(Refusal::NotAdmin)
    } else {
        Ok(())
    }
}

/// `by` manages a room (renames it, makes a member an admin): only an admin of a group may; a
/// non-member learns nothing.
pub fn may_manage(room: RoomFacts, by_is_member: bool, by_is_admin: bool) -> Result<(), Refusal> {
    if !by_is_member {
        Err(Refusal::NotFound)
    } else if room.is_direct {
        Err(Refusal::DirectRoom)
    } else if !by_is_admin {
        Err(Refusal::NotAdmin)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: RoomFacts = RoomFacts {
        is_direct: false,
        creator: Some(UserId(1)),
    };
    const DIRECT: RoomFacts = RoomFacts {
        is_direct: true,
        creator: Some(UserId(1)),
    };

    #[test]
    fn members_add_active_accounts_to_groups_and_strangers_learn_nothing() {
        assert_eq!(may_add(GROUP, true, true), Ok(()));
        assert_eq!(may_add(GROUP, true, false), Err(Refusal::NoSuchUser));
        assert_eq!(may_add(DIRECT, true, true), Err(Refusal::DirectRoom));
        assert_eq!(may_add(DIRECT, false, true), Err(Refusal::NotFound));
        assert_eq!(may_add(GROUP, false, true), Err(Refusal::NotFound));
    }

    #[test]
    fn room_caps_bound_the_actor_each_joining_user_and_what_one_user_puts_another_in() {
        let caps = RoomCaps {
            max_rooms_per_user: 10,
            max_rooms_added_by_one_user: 3,
        };
        let fine = Joining {
            rooms: 9,
            from_actor: 2,
        };
        assert_eq!(may_join(caps, Some(9), &[fine]), Ok(()));
        assert_eq!(may_join(caps, None, &[fine]), Ok(()));
        assert_eq!(
            may_join(caps, Some(10), &[fine]),
            Err(Refusal::YouHaveTooManyRooms)
        );
        let full = Joining { rooms: 10, ..fine };
        assert_eq!(
            may_join(caps, Some(0), &[fine, full]),
            Err(Refusal::TheyHaveTooManyRooms)
        );
        let pestered = Joining {
            from_actor: 3,
            ..fine
        };
        assert_eq!(
            may_join(caps, Some(0), &[pestered]),
            Err(Refusal::TooManyRoomsFromYou)
        );
    }

    #[test]
    fn anyone_leaves_a_group_and_only_its_admins_remove_others() {
        let (admin, member, other) = (UserId(1), UserId(2), UserId(3));
        assert_eq!(may_remove(GROUP, member, member, true, false), Ok(()));
        assert_eq!(may_remove(GROUP, admin, other, true, true), Ok(()));
        assert_eq!(
            may_remove(GROUP, member, other, true, false),
            Err(Refusal::NotAdmin)
        );
        assert_eq!(may_remove(DIRECT, member, member, true, false), Ok(()));
        assert_eq!(
            may_remove(DIRECT, admin, member, true, true),
            Err(Refusal::DirectRoom)
        );
        assert_eq!(
            may_remove(GROUP, admin, other, false, true),
            Err(Refusal::NotFound)
        );
        assert_eq!(may_manage(GROUP, true, true), Ok(()));
        assert_eq!(may_manage(GROUP, true, false), Err(Refusal::NotAdmin));
        assert_eq!(may_manage(DIRECT, true, true), Err(Refusal::DirectRoom));
        assert_eq!(may_manage(GROUP, false, true), Err(Refusal::NotFound));
    }
}

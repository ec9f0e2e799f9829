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

/// `by` removes `user` from a room: anyone may leave a group, and its creator may remove
/// anyone. Both must be members; nobody leaves a direct room.
pub fn may_remove(
    room: RoomFacts,
    by: UserId,
    user: UserId,
    both_members: bool,
) -> Result<(), Refusal> {
    if !both_members {
        Err(Refusal::NotFound)
    } else if room.is_direct {
        Err(Refusal::DirectRoom)
    } else if user != by && room.creator != Some(by) {
        Err(Refusal::NotCreator)
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
    fn anyone_leaves_a_group_and_only_its_creator_removes_others() {
        let (creator, member, other) = (UserId(1), UserId(2), UserId(3));
        assert_eq!(may_remove(GROUP, member, member, true), Ok(()));
        assert_eq!(may_remove(GROUP, creator, other, true), Ok(()));
        assert_eq!(
            may_remove(GROUP, member, other, true),
            Err(Refusal::NotCreator)
        );
        assert_eq!(
            may_remove(DIRECT, creator, creator, true),
            Err(Refusal::DirectRoom)
        );
        assert_eq!(
            may_remove(GROUP, creator, other, false),
            Err(Refusal::NotFound)
        );
    }
}

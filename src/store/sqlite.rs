//! [`ChatStore`] over SQLite: each operation is one closure on a reader connection (one
//! snapshot) or one job of the writer's group commit.

use std::collections::HashSet;

use rusqlite::Connection;

use super::api::{
    ChatStore, CreatedRoom, Fut, Head, HookCreated, Joined, Managed, MemberAdded, MemberRemoved,
    NewHook, NewMessage, NewRoom, OnCommit, Refusal, ReplayPage, RoomChange, Sending,
};
use super::edits::{self, Changed};
use super::hooks::{self, Hook};
use super::messages::{self, Page, ReadMark};
use super::rooms::{self, RoomCursor, RoomRef};
use super::tokens::{self, TokenRow};
use super::uploads::{self, Upload};
use super::users::{self, Credentials, NewUser, Taken, UserQuery};
use super::{Result, Store, StoreError, admin};
use super::{lookups, replay};
use crate::membership::{self, RoomCaps};
use crate::model::{Auth, Message, MessageId, Room, RoomId, Seq, User, UserId};

/// The live session whose token has this digest.
fn session(conn: &Connection, digest: &[u8], now: i64) -> Result<Option<Auth>> {
    Ok(tokens::authenticate(conn, digest, now)?.map(|found| Auth {
        user: found.user,
        token_id: found.id,
        expires_at: found.expires_at,
    }))
}

/// The session of the token and the room, if that user is a member of it.
fn member_of(conn: &Connection, digest: &[u8], public_id: &str) -> Result<(Auth, RoomRef)> {
    let auth = session(conn, digest, super::now_ms())?.ok_or(Refusal::Unauthenticated)?;
    let room = rooms::for_member(conn, public_id, auth.user.id)?.ok_or(Refusal::NotFound)?;
    Ok((auth, room))
}

/// Where a room stands.
fn head(c: &Connection, room: RoomId) -> Result<Head> {
    Ok(Head {
        id: messages::last_id(c, room)?,
        seq: messages::last_seq(c, room)?,
    })
}

impl ChatStore for Store {
    fn session(&self, digest: Vec<u8>) -> Fut<'_, Option<Auth>> {
        Box::pin(self.read(move |c| session(c, &digest, super::now_ms())))
    }

    fn credentials(&self, typed: String) -> Fut<'_, Option<Credentials>> {
        Box::pin(self.read(move |c| users::credentials(c, &typed)))
    }

    fn create_user(&self, new: NewUser, now: i64) -> Fut<'_, User> {
        Box::pin(self.write(move |c| {
            users::insert(c, &new, now)?.map_err(|taken| {
                StoreError::from(match taken {
                    Taken::Name => Refusal::UsernameTaken,
                    Taken::LookAlike => Refusal::UsernameLookAlike,
                })
            })
        }))
    }

    fn open_session(
        &self,
        user: UserId,
        digest: Vec<u8>,
        now: i64,
        expires_at: i64,
    ) -> Fut<'_, i64> {
        Box::pin(self.write(move |c| {
            tokens::delete_expired_for(c, user, now)?;
            tokens::insert(c, user, &digest, now, expires_at)
        }))
    }

    fn end_session(&self, token_id: i64) -> Fut<'_, ()> {
        Box::pin(self.write(move |c| tokens::delete(c, token_id).map(drop)))
    }

    fn sessions_of(&self, user: UserId, now: i64) -> Fut<'_, Vec<TokenRow>> {
        Box::pin(self.read(move |c| tokens::list_for(c, user, now)))
    }

    fn end_session_of(&self, user: UserId, id: i64) -> Fut<'_, bool> {
        Box::pin(self.write(move |c| tokens::delete_for(c, user, id)))
    }

    fn end_sessions_of(&self, user: UserId) -> Fut<'_, Vec<i64>> {
        Box::pin(self.write(move |c| tokens::delete_all_for(c, user)))
    }

    fn directory(&self, query: UserQuery) -> Fut<'_, (i64, Vec<User>)> {
        Box::pin(self.read(move |c| users::list(c, &query)))
    }

    fn inactive_among(&self, ids: Vec<UserId>) -> Fut<'_, Vec<UserId>> {
        Box::pin(self.read(move |c| admin::inactive_among(c, &ids)))
    }

    fn revoked_among(&self, ids: Vec<i64>) -> Fut<'_, Vec<i64>> {
        Box::pin(self.read(move |c| admin::revoked_among(c, &ids)))
    }

    fn rooms_page(
        &self,
        user: UserId,
        before: Option<RoomCursor>,
        limit: u32,
    ) -> Fut<'_, (Vec<Room>, Option<RoomCursor>)> {
        Box::pin(self.read(move |c| rooms::page_for(c, user, before.as_ref(), limit)))
    }

    fn room_refs_of(&self, user: UserId) -> Fut<'_, Vec<RoomRef>> {
        Box::pin(self.read(move |c| rooms::refs_for(c, user)))
    }

    fn room_heads_of(&self, user: UserId) -> Fut<'_, Vec<(Head, RoomRef)>> {
        Box::pin(self.read(move |c| {
            rooms::refs_for(c, user)?
                .into_iter()
                .map(|r| Ok((head(c, r.id)?, r)))
                .collect()
        }))
    }

    fn room_for_member(&self, public_id: String, user: UserId) -> Fut<'_, Option<RoomRef>> {
        Box::pin(self.read(move |c| rooms::for_member(c, &public_id, user)))
    }

    fn member_room(&self, digest: Vec<u8>, public_id: String) -> Fut<'_, (Auth, RoomRef, Head)> {
        Box::pin(self.read(move |c| {
            let (auth, room) = member_of(c, &digest, &public_id)?;
            let head = head(c, room.id)?;
            Ok((auth, room, head))
        }))
    }

    fn head_if_member(&self, room: RoomId, user: UserId) -> Fut<'_, Option<Head>> {
        Box::pin(self.read(move |c| {
            rooms::is_member(c, room, user)?
                .then(|| head(c, room))
                .transpose()
        }))
    }

    fn direct_room(&self, me: UserId, other: UserId) -> Fut<'_, Option<Room>> {
        Box::pin(self.read(move |c| match rooms::find_direct(c, me, other)? {
            Some(room) if rooms::is_member(c, room.id, me)? => Ok(Some(rooms::view(c, &room, me)?)),
            _ => Ok(None),
        }))
    }

    fn create_room(&self, new: NewRoom, now: i64) -> Fut<'_, CreatedRoom> {
        Box::pin(self.write(move |c| {
            let found = users::existing(c, &new.members)?;
            if found.len() != new.members.len() {
                let missing = new
                    .members
                    .iter()
                    .filter(|m| !found.contains(m))
                    .copied()
                    .collect();
                return Err(Refusal::UnknownUsers(missing).into());
            }
            let me = new.creator;
            if new.name.is_none()
                && new.members.len() == 2
                && let Some(existing) = rooms::find_direct(c, new.members[0], new.members[1])?
            {
                // The asker left it (declined it) once: asking again is taking it back.
                let rejoined = !rooms::is_member(c, existing.id, me)?;
                if rejoined {
                    membership::may_join(new.caps, Some(rooms::count_for(c, me)?), &[])?;
                    rooms::add_member(c, existing.id, me, me, now)?;
                }
                return Ok(CreatedRoom {
                    view: rooms::view(c, &existing, me)?,
                    created: rejoined.then_some(existing.id),
                });
            }
            let joining = new
                .members
                .iter()
                .filter(|m| **m != me)
                .map(|m| rooms::joining(c, *m, me))
                .collect::<Result<Vec<_>>>()?;
            membership::may_join(new.caps, Some(rooms::count_for(c, me)?), &joining)?;
            let row = rooms::NewRoom {
                public_id: &new.public_id,
                name: new.name.as_deref(),
                creator: me,
                members: &new.members,
            };
            let room = rooms::insert(c, &row, now)?;
            Ok(CreatedRoom {
                view: rooms::view(c, &room, me)?,
                created: Some(room.id),
            })
        }))
    }

    fn add_member(
        &self,
        room: RoomRef,
        by: UserId,
        user_id: UserId,
        caps: RoomCaps,
        now: i64,
        on_commit: OnCommit<MemberAdded>,
    ) -> Fut<'_, MemberAdded> {
        Box::pin(self.write_then(
            move |c| {
                let user = users::get(c, user_id)?;
                let active = user.is_some() && !users::existing(c, &[user_id])?.is_empty();
                let facts = rooms::info(c, room.id)?;
                membership::may_add(facts, rooms::is_member(c, room.id, by)?, active)?;
                let user = user.ok_or(Refusal::NoSuchUser)?;
                if !rooms::is_member(c, room.id, user_id)? {
                    membership::may_join(caps, None, &[rooms::joining(c, user_id, by)?])?;
                }
                let joined = if rooms::add_member(c, room.id, user_id, by, now)? {
                    Some(Joined {
                        view: rooms::view(c, &room, user_id)?,
                        room: room.clone(),
                        user,
                    })
                } else {
                    None
                };
                Ok(MemberAdded {
                    view: rooms::view(c, &room, by)?,
                    joined,
                })
            },
            on_commit,
        ))
    }

    fn remove_member(
        &self,
        room: RoomRef,
        by: UserId,
        user_id: UserId,
        on_commit: OnCommit<MemberRemoved>,
    ) -> Fut<'_, MemberRemoved> {
        Box::pin(self.write_then(
            move |c| {
                let facts = rooms::info(c, room.id)?;
                let both =
                    rooms::is_member(c, room.id, by)? && rooms::is_member(c, room.id, user_id)?;
                let admin = rooms::is_admin(c, room.id, by)?;
                membership::may_remove(facts, by, user_id, both, admin)?;
                let user = users::get(c, user_id)?.ok_or(Refusal::NotFound)?;
                rooms::remove_member(c, room.id, user_id)?;
                let hook_bots = hooks::end_for(c, &room, user_id)?;
                Ok(MemberRemoved {
                    room,
                    user,
                    hook_bots,
                })
            },
            on_commit,
        ))
    }

    fn create_owned_bot(
        &self,
        owner: UserId,
        new: NewUser,
        digest: Vec<u8>,
        max: i64,
        now: i64,
    ) -> Fut<'_, User> {
        Box::pin(self.write(move |c| {
            if (admin::owned_bots(c, owner)?.len() as i64) >= max {
                return Err(Refusal::TooManyBots.into());
            }
            let bot = admin::create_bot(c, &new, now)?.map_err(|taken| match taken {
                Taken::Name => Refusal::UsernameTaken,
                Taken::LookAlike => Refusal::UsernameLookAlike,
            })?;
            admin::set_owner(c, bot.id, owner)?;
            admin::replace_bot_token(c, bot.id, &digest, now)?;
            Ok(bot)
        }))
    }

    fn owned_bots(&self, owner: UserId) -> Fut<'_, Vec<User>> {
        Box::pin(self.read(move |c| admin::owned_bots(c, owner)))
    }

    fn replace_bot_token(
        &self,
        owner: UserId,
        bot: UserId,
        digest: Vec<u8>,
        now: i64,
    ) -> Fut<'_, Vec<i64>> {
        Box::pin(self.write(move |c| {
            if !admin::owns(c, owner, bot)? {
                return Err(Refusal::NotFound.into());
            }
            admin::replace_bot_token(c, bot, &digest, now)
        }))
    }

    fn deactivate_bot(&self, owner: UserId, bot: UserId) -> Fut<'_, Vec<i64>> {
        Box::pin(self.write(move |c| {
            if !admin::owns(c, owner, bot)? {
                return Err(Refusal::NotFound.into());
            }
            admin::deactivate_bot(c, bot)
        }))
    }

    fn create_hook(
        &self,
        room: RoomRef,
        by: UserId,
        new: NewHook,
        now: i64,
        on_commit: OnCommit<HookCreated>,
    ) -> Fut<'_, HookCreated> {
        Box::pin(self.write_then(
            move |c| {
                if !rooms::is_member(c, room.id, by)? {
                    return Err(Refusal::NotFound.into());
                }
                if rooms::info(c, room.id)?.is_direct {
                    return Err(Refusal::DirectRoom.into());
                }
                let (in_room, by_user) = hooks::counts(c, &room, by)?;
                if in_room >= new.max_per_room || by_user >= new.max_per_user {
                    return Err(Refusal::TooManyHooks.into());
                }
                let bot = admin::create_bot(c, &new.bot, now)?.map_err(|taken| match taken {
                    Taken::Name => Refusal::UsernameTaken,
                    Taken::LookAlike => Refusal::UsernameLookAlike,
                })?;
                rooms::add_member(c, room.id, bot.id, by, now)?;
                let hook = hooks::insert(c, &room, by, &bot, &new.name, &new.digest, now)?;
                let joined = Joined {
                    view: rooms::view(c, &room, bot.id)?,
                    room: room.clone(),
                    user: bot,
                };
                let added = MemberAdded {
                    view: rooms::view(c, &room, by)?,
                    joined: Some(joined),
                };
                Ok(HookCreated { hook, added })
            },
            on_commit,
        ))
    }

    fn hooks(&self, room: RoomRef) -> Fut<'_, Vec<Hook>> {
        Box::pin(self.read(move |c| hooks::list(c, &room)))
    }

    fn delete_hook(
        &self,
        room: RoomRef,
        by: UserId,
        id: i64,
        on_commit: OnCommit<MemberRemoved>,
    ) -> Fut<'_, MemberRemoved> {
        Box::pin(self.write_then(
            move |c| {
                let hook = hooks::get(c, &room, id)?.ok_or(Refusal::NotFound)?;
                if hook.creator_id != by && !rooms::is_admin(c, room.id, by)? {
                    return Err(Refusal::NotAdmin.into());
                }
                hooks::end(c, &room, hook.id, hook.bot.id)?;
                Ok(MemberRemoved {
                    room,
                    user: hook.bot,
                    hook_bots: Vec::new(),
                })
            },
            on_commit,
        ))
    }

    fn hook_sender(&self, digest: Vec<u8>) -> Fut<'_, Option<(User, RoomRef)>> {
        Box::pin(self.read(move |c| hooks::sender(c, &digest)))
    }

    fn manage_room(
        &self,
        room: RoomRef,
        by: UserId,
        change: RoomChange,
        on_commit: OnCommit<Managed>,
    ) -> Fut<'_, Managed> {
        Box::pin(self.write_then(
            move |c| {
                let facts = rooms::info(c, room.id)?;
                let member = rooms::is_member(c, room.id, by)?;
                let admin = rooms::is_admin(c, room.id, by)?;
                membership::may_manage(facts, member, admin)?;
                let changed = match &change {
                    RoomChange::Rename(name) => {
                        rooms::rename(c, room.id, name)?;
                        true
                    }
                    RoomChange::MakeAdmin(user) => {
                        if !rooms::is_member(c, room.id, *user)? {
                            return Err(Refusal::NotFound.into());
                        }
                        rooms::make_admin(c, room.id, *user)?
                    }
                };
                Ok(Managed {
                    view: rooms::view(c, &room, by)?,
                    room,
                    changed,
                })
            },
            on_commit,
        ))
    }

    fn history_json(
        &self,
        digest: Vec<u8>,
        public_id: String,
        page: Page,
        limit: u32,
    ) -> Fut<'_, Vec<u8>> {
        Box::pin(self.read(move |c| {
            let (auth, room) = member_of(c, &digest, &public_id)?;
            // About a message's size with every field, so a page is written without regrowing.
            let mut body = Vec::with_capacity(256 + 512 * limit as usize);
            body.extend_from_slice(b"{\"room_id\":");
            serde_json::to_writer(&mut body, &room.public_id)
                .map_err(|e| StoreError::Other(e.to_string()))?;
            body.extend_from_slice(b",\"results\":");
            let more = messages::page_json(c, &room, page, limit, auth.user.id, &mut body)?;
            body.extend_from_slice(if more {
                b",\"has_more\":true}"
            } else {
                b",\"has_more\":false}"
            });
            Ok(body)
        }))
    }

    fn submit_message(
        &self,
        m: NewMessage,
        now: i64,
        on_commit: OnCommit<(Message, bool)>,
    ) -> Result<Sending> {
        let pending = self.submit_then(move |c| messages::insert(c, &m, now), on_commit)?;
        Ok(Box::pin(pending))
    }

    fn mark_read(
        &self,
        message: MessageId,
        user: UserId,
        on_commit: OnCommit<Option<ReadMark>>,
    ) -> Fut<'_, Option<ReadMark>> {
        Box::pin(self.write_then(move |c| messages::mark_read(c, message, user), on_commit))
    }

    fn edit_message(
        &self,
        by: UserId,
        id: MessageId,
        content: String,
        now: i64,
        on_commit: OnCommit<Changed>,
    ) -> Fut<'_, Changed> {
        Box::pin(self.write_then(move |c| edits::edit(c, id, by, &content, now), on_commit))
    }

    fn delete_message(
        &self,
        by: UserId,
        id: MessageId,
        now: i64,
        on_commit: OnCommit<Changed>,
    ) -> Fut<'_, Changed> {
        Box::pin(self.write_then(move |c| edits::delete(c, id, by, now), on_commit))
    }

    fn search(
        &self,
        user: UserId,
        fts: String,
        room: Option<String>,
        before: Option<MessageId>,
        limit: u32,
    ) -> Fut<'_, (Vec<Message>, Option<MessageId>)> {
        Box::pin(self.read(move |c| lookups::search(c, user, &fts, room.as_deref(), before, limit)))
    }

    fn mentions_of(
        &self,
        user: UserId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Fut<'_, (Vec<Message>, Option<MessageId>)> {
        Box::pin(self.read(move |c| lookups::mentions_of(c, user, before, limit)))
    }

    fn react(
        &self,
        by: UserId,
        id: MessageId,
        emoji: String,
        on: bool,
        on_commit: OnCommit<Changed>,
    ) -> Fut<'_, Changed> {
        let now = super::now_ms();
        Box::pin(self.write_then(move |c| edits::react(c, id, by, &emoji, on, now), on_commit))
    }

    fn replay_page(
        &self,
        room: Option<RoomRef>,
        user: UserId,
        after: Seq,
        limit: u32,
    ) -> Fut<'_, Option<ReplayPage>> {
        Box::pin(self.read(move |c| {
            let (changes, more) = match room {
                // Membership is read in the same snapshot as the page.
                Some(room) if !rooms::is_member(c, room.id, user)? => return Ok(None),
                Some(room) => replay::changes(c, &room, after, limit)?,
                None => replay::changes_for_user(c, user, after, limit)?,
            };
            Ok(Some(ReplayPage { changes, more }))
        }))
    }

    fn health(&self) -> Fut<'_, i64> {
        Box::pin(async move {
            if self.pressure().storage_failing {
                return Err(StoreError::StorageFull(
                    "writes fail for the storage (disk full or failing)".into(),
                ));
            }
            let version = self.read(admin::health).await?;
            // An empty job through the writer: proves it is alive and can take the write lock.
            self.write(|_| Ok(())).await?;
            Ok(version)
        })
    }

    fn pressure(&self) -> super::Pressure {
        Store::pressure(self)
    }

    fn create_upload(&self, upload: Upload, quota: u64) -> Fut<'_, ()> {
        Box::pin(self.write(move |c| uploads::insert(c, &upload, quota)))
    }

    fn upload_usage(&self, owner: UserId) -> Fut<'_, u64> {
        Box::pin(self.read(move |c| uploads::usage(c, owner)))
    }

    fn visible_upload(&self, public_id: String, viewer: UserId) -> Fut<'_, Option<Upload>> {
        Box::pin(self.read(move |c| uploads::visible(c, &public_id, viewer)))
    }

    fn expire_uploads(&self, before: i64) -> Fut<'_, usize> {
        Box::pin(self.write(move |c| uploads::expire_unattached(c, before)))
    }

    fn referenced_files(&self) -> Fut<'_, HashSet<String>> {
        Box::pin(self.read(uploads::referenced))
    }

    fn upload_totals(&self) -> Fut<'_, (u64, u64)> {
        Box::pin(self.read(uploads::totals))
    }

    fn last_message_id(&self) -> Fut<'_, i64> {
        Box::pin(self.read(admin::last_message_id))
    }

    fn close(&self) -> Fut<'_, ()> {
        Box::pin(Store::close(self))
    }
}

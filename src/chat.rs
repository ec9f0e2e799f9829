//! The chat itself, apart from any transport: sending, read marks, membership, typing and the
//! events each publishes. The REST handlers and the WebSocket session both call these, so a
//! message sent either way is validated, stored and delivered the same way.

use std::sync::Arc;

use crate::auth::{authenticate_token, token_key};
use crate::error::ApiError;
use crate::frames::{Frame, ServerFrame};
use crate::hub::{Event, EventKind, Hub};
use crate::membership::RoomCaps;
use crate::metrics::{Bound, METRICS};
use crate::model::{MAX_ATTACHMENTS, Message, MessageId, Refusal, Room, RoomId, User, UserId};
use crate::ratelimit::retry_after_secs;
use crate::state::AppState;
use crate::store::api::{
    CreatedRoom, Managed, MemberAdded, MemberRemoved, NewMessage, NewRoom, RoomChange,
};
use crate::store::edits::Changed;
use crate::store::messages::ReadMark;
use crate::store::rooms::RoomRef;
use crate::store::{StoreError, now_ms};

/// Longest `client_id` a send may carry.
const MAX_CLIENT_ID_CHARS: usize = 128;

/// Our public ids (of rooms and of uploads) are short alphanumeric strings; anything else
/// cannot name one and costs no query.
pub fn plausible_public_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The room with this public id if the caller is a member; 404 otherwise, so a non-member
/// cannot tell whether it exists.
pub async fn room_for_member(
    state: &AppState,
    public_id: String,
    user: &User,
) -> Result<RoomRef, ApiError> {
    if !plausible_public_id(&public_id) {
        return Err(ApiError::NotFound);
    }
    let user = user.id;
    state
        .store
        .room_for_member(public_id, user)
        .await?
        .ok_or(ApiError::NotFound)
}

/// For handlers that authenticate in the same trip to the database as their other reads: the
/// token's digest and what was asked, once the request is well-formed. A malformed request
/// still answers a stranger 401 before anything else.
pub async fn member_request<T>(
    state: &AppState,
    token: Option<&str>,
    room_id: &str,
    asked: Result<T, ApiError>,
) -> Result<(Vec<u8>, T), ApiError> {
    let digest = token_key(token)?;
    let asked = asked.and_then(|asked| {
        plausible_public_id(room_id)
            .then_some(asked)
            .ok_or(ApiError::NotFound)
    });
    match asked {
        Ok(asked) => Ok((digest, asked)),
        Err(e) => {
            authenticate_token(state, token).await?;
            Err(e)
        }
    }
}

/// Checks content against the limits: trimmed, non-empty, not too long, no NUL.
pub fn validate_content(state: &AppState, content: &str) -> Result<String, ApiError> {
    let content = content.trim();
    let max = state.config.limits.max_message_chars;
    if content.is_empty() {
        return Err(ApiError::validation("content", "must not be empty"));
    }
    if content.chars().count() > max {
        return Err(ApiError::validation(
            "content",
            format!("must be at most {max} characters"),
        ));
    }
    if content.contains('\0') {
        return Err(ApiError::validation(
            "content",
            "must not contain NUL characters",
        ));
    }
    Ok(content.to_string())
}

/// The frame every subscriber receives for a new message.
pub fn message_event(room: RoomId, message: &Message) -> Event {
    with_own_frame(message, |message| {
        Event::new(
            room,
            EventKind::Change(message.seq),
            &ServerFrame::Message {
                seq: message.seq,
                message,
            },
        )
    })
}

/// `event` of `message` for everyone but its sender, who alone is shown its `client_id`:
/// for a message with one, the sender's sockets get a frame of their own.
fn with_own_frame(message: &Message, event: impl Fn(&Message) -> Event) -> Event {
    let Some(client_id) = &message.client_id else {
        return event(message);
    };
    let mut shared = event(message);
    // The frame for everyone else is the sender's with `null` for the key: the field is
    // found by its name and JSON-escaped value, which no text inside a string can spell (a
    // quote in it is escaped), so the copy costs a copy, not a second serialization.
    let field = format!(
        "\"client_id\":{}",
        serde_json::to_string(client_id).expect("a string serializes")
    );
    let public = match shared.frame.as_str().split_once(&field) {
        Some((before, after)) => Frame::from(format!("{before}\"client_id\":null{after}")),
        None => {
            let mut public = message.clone();
            public.client_id = None;
            event(&public).frame
        }
    };
    let own = std::mem::replace(&mut shared.frame, public);
    shared.own = Some((message.sender_id, own));
    shared
}

/// The frame every subscriber receives for an edited, deleted or reacted-to message. With
/// reactions, each recipient is told which are theirs (`me`).
pub fn message_updated_event(room: RoomId, message: &Message) -> Event {
    let mut event = with_own_frame(message, |message| {
        Event::new(
            room,
            EventKind::Change(message.seq),
            &ServerFrame::MessageUpdated {
                seq: message.seq,
                message,
            },
        )
    });
    if !message.reactions.is_empty() {
        event.personal = Some(Arc::new(message.clone()));
    }
    event
}

/// A send that was accepted and queued for the database: resolves to the message and whether
/// it is new once its transaction committed.
pub use crate::store::api::Sending;

/// Validates, rate-limits, stores and publishes a message. Publication happens on the
/// writer right after the commit, so subscribers see messages in id order and never one that
/// is not durable. A repeated `client_id` returns the original (flag `false`) and publishes
/// nothing.
pub async fn send(
    state: &AppState,
    sender: &User,
    room: RoomRef,
    draft: Draft,
) -> Result<(Message, bool), ApiError> {
    Ok(submit(state, sender, room, draft)?.await?)
}

/// What a sender asks to post.
#[derive(Debug, Default)]
pub struct Draft {
    pub content: String,
    /// The sender's idempotency key.
    pub client_id: Option<String>,
    /// The message of the same room this one answers.
    pub reply_to: Option<MessageId>,
    /// The ids of the sender's uploads to attach, in order.
    pub attachments: Vec<String>,
}

impl Draft {
    /// Text alone.
    pub fn text(content: impl Into<String>, client_id: Option<String>) -> Draft {
        Draft {
            content: content.into(),
            client_id,
            ..Draft::default()
        }
    }
}

/// The upload ids a message attaches: at most [`MAX_ATTACHMENTS`], each once.
fn validate_attachments(ids: Vec<String>) -> Result<Vec<String>, ApiError> {
    if ids.len() > MAX_ATTACHMENTS {
        return Err(ApiError::validation(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} files a message"),
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(ApiError::validation(
                "attachments",
                "names the same upload twice",
            ));
        }
        if !plausible_public_id(id) {
            return Err(ApiError::missing("attachments", "no such upload"));
        }
    }
    Ok(ids)
}

/// The part of [`send`] that does not wait: validation and the rate limit, then the write is
/// queued. Sends submitted one after another commit in that order, so a connection can keep
/// several in flight and still have them stored in the order it sent them.
pub fn submit(
    state: &AppState,
    sender: &User,
    room: RoomRef,
    draft: Draft,
) -> Result<Sending, ApiError> {
    let Draft {
        content,
        client_id,
        reply_to,
        attachments,
    } = draft;
    let attachments = validate_attachments(attachments)?;
    // A message of files alone needs no text.
    let content = if attachments.is_empty() || !content.trim().is_empty() {
        validate_content(state, &content)?
    } else {
        String::new()
    };
    if client_id
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.chars().count() > MAX_CLIENT_ID_CHARS)
    {
        return Err(ApiError::validation(
            "client_id",
            format!("must be 1 to {MAX_CLIENT_ID_CHARS} characters"),
        ));
    }
    if let Err(wait) = state.limits.sends.take(&sender.id) {
        return Err(ApiError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        });
    }
    let hub = state.hub.clone();
    let room_id = room.id;
    let sender = sender.clone();
    let timer = crate::metrics::METRICS.send_latency.start_timer();
    if reply_to.is_some_and(|id| id.0 <= 0) {
        return Err(ApiError::missing(
            "reply_to",
            "no such message in this room",
        ));
    }
    let message = NewMessage {
        room,
        sender,
        content,
        client_id,
        reply_to,
        attachments,
    };
    let on_commit = Box::new(move |(message, created): &(Message, bool)| {
        if *created {
            crate::metrics::METRICS.messages_stored.inc();
            hub.publish(room_id, message_event(room_id, message));
        }
        drop(timer);
    });
    Ok(state.store.submit_message(message, now_ms(), on_commit)?)
}

/// `user` edits message `id`: validated and rate-limited like a send; the room hears of it
/// (`message_updated`) once it committed. An edit to the same text changes nothing.
pub async fn edit_message(
    state: &AppState,
    user: &User,
    id: MessageId,
    content: &str,
) -> Result<Message, ApiError> {
    if id.0 <= 0 {
        return Err(ApiError::NotFound);
    }
    let content = validate_content(state, content)?;
    if let Err(wait) = state.limits.sends.take(&user.id) {
        return Err(ApiError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        });
    }
    let hub = state.hub.clone();
    let mut changed = state
        .store
        .edit_message(user.id, id, content, now_ms(), publish_change(hub))
        .await?;
    changed.message.seen_by(Some(user.id));
    Ok(changed.message)
}

/// `user` deletes message `id`, leaving a tombstone; the room hears of it once it committed.
/// Deleting a tombstone changes nothing.
pub async fn delete_message(
    state: &AppState,
    user: &User,
    id: MessageId,
) -> Result<Message, ApiError> {
    if id.0 <= 0 {
        return Err(ApiError::NotFound);
    }
    let hub = state.hub.clone();
    let mut changed = state
        .store
        .delete_message(user.id, id, now_ms(), publish_change(hub))
        .await?;
    if changed.files_freed {
        state.files.sweep_soon.notify_one();
    }
    changed.message.seen_by(Some(user.id));
    Ok(changed.message)
}

/// The one emoji `text` is, as the emoji table spells it: the table's spelling, or the same
/// without its variation selectors (which are added). Anything else (text, a digit, two
/// emoji, an emoji with extra characters) is refused.
pub fn one_emoji(text: &str) -> Result<String, ApiError> {
    let found = emojis::get(text).or_else(|| emojis::get(&format!("{text}\u{fe0f}")));
    found
        .map(emojis::Emoji::as_str)
        .filter(|e| *e == text || unqualified(e) == text)
        .map(str::to_string)
        .ok_or_else(|| ApiError::validation("emoji", "must be exactly one emoji"))
}

/// `emoji` without its variation selectors (U+FE0F), as many keyboards send it.
pub fn unqualified(emoji: &str) -> String {
    emoji.replace('\u{fe0f}', "")
}

/// `user` adds (`on`) or takes back a reaction to message `id`; the room hears of a change.
/// Adding one that is there, or taking back one that is not, changes nothing.
pub async fn react(
    state: &AppState,
    user: &User,
    id: MessageId,
    emoji: &str,
    on: bool,
) -> Result<Message, ApiError> {
    if id.0 <= 0 {
        return Err(ApiError::NotFound);
    }
    let emoji = one_emoji(emoji)?;
    if let Err(wait) = state.limits.sends.take(&user.id) {
        return Err(ApiError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        });
    }
    let hub = state.hub.clone();
    let mut changed = state
        .store
        .react(user.id, id, emoji, on, publish_change(hub))
        .await?;
    changed.message.seen_by(Some(user.id));
    Ok(changed.message)
}

/// The commit hook of an edit or a deletion: publishes the message as it is now.
fn publish_change(hub: Arc<dyn Hub>) -> Box<dyn FnOnce(&Changed) + Send> {
    Box::new(move |c: &Changed| {
        if c.changed {
            hub.publish(c.room.id, message_updated_event(c.room.id, &c.message));
        }
    })
}

/// Moves the caller's read mark and tells the room. `None`: no such message for this user.
pub async fn mark_read(
    state: &AppState,
    user: &User,
    message_id: MessageId,
) -> Result<Option<MessageId>, ApiError> {
    let hub = state.hub.clone();
    let user_id = user.id;
    let mark = state
        .store
        .mark_read(
            message_id,
            user_id,
            Box::new(move |mark: &Option<ReadMark>| {
                // Only a mark that moved is news; repeating a read broadcasts nothing.
                if let Some(mark) = mark.as_ref().filter(|m| m.moved) {
                    let event = Event::new(
                        mark.room.id,
                        EventKind::Read,
                        &ServerFrame::Read {
                            room_id: &mark.room.public_id,
                            user_id: mark.user,
                            message_id: mark.message_id,
                        },
                    );
                    hub.publish(mark.room.id, event);
                }
            }),
        )
        .await?;
    Ok(mark.map(|m| m.message_id))
}

/// `{"type":"room"}`: tells a user's all-rooms sockets about a room they now belong to.
fn room_event(room_id: RoomId, room: &Room) -> Event {
    Event::new(
        room_id,
        EventKind::Room,
        &ServerFrame::Room {
            room_id: &room.room_id,
            room,
        },
    )
}

/// `{"type":"member"}`: someone joined or left the room.
fn member_event(room_id: RoomId, public_id: &str, user: &User, added: bool) -> Event {
    Event::new(
        room_id,
        EventKind::Member {
            user: user.id,
            added,
        },
        &ServerFrame::Member {
            room_id: public_id,
            user,
            added,
        },
    )
}

/// After a user joined a room: their all-rooms sockets follow it and hear about it.
fn announce_joined(hub: &dyn Hub, room_id: RoomId, room: &Room, user: &User) {
    if hub.follow(room_id, user.id) {
        hub.publish(
            room_id,
            crate::hub::presence_event(room_id, &room.room_id, user, true),
        );
    }
    hub.notify_user(user.id, room_event(room_id, room));
}

/// A new random public id for a room or an upload: 96 bits, URL-safe.
pub fn new_public_id() -> String {
    let mut bytes = [0u8; 12];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// Most members a room may be created with.
const MAX_MEMBERS: usize = 1000;
const MAX_NAME_CHARS: usize = 100;

/// Creates a room of `me` and `members`, or finds the direct room of the pair; tells every
/// member of a new room. Returns the room as `me` sees it and whether it is new.
pub async fn create_room(
    state: &AppState,
    me: UserId,
    name: Option<String>,
    members: Vec<i64>,
) -> Result<(Room, bool), ApiError> {
    let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    if name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
    {
        return Err(ApiError::validation(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    let mut members: Vec<UserId> = members.into_iter().map(UserId).collect();
    members.push(me);
    members.sort();
    members.dedup();
    if members.len() < 2 {
        return Err(ApiError::validation(
            "members",
            "a room needs at least one member besides you",
        ));
    }
    if members.len() > MAX_MEMBERS {
        return Err(ApiError::validation(
            "members",
            format!("a room has at most {MAX_MEMBERS} members"),
        ));
    }
    let new = NewRoom {
        public_id: new_public_id(),
        name,
        creator: me,
        members,
        caps: room_caps(state),
    };
    // Taken up front, so that concurrent creations cannot all slip past the limit; given
    // back when the pair's direct room existed. Past the limit, asking for an existing direct
    // room still finds it.
    if let Err(wait) = state.limits.rooms_created.take(&me) {
        let other = new.members.iter().find(|m| **m != me).copied();
        if new.name.is_none()
            && new.members.len() == 2
            && let Some(other) = other
            && let Some(room) = state.store.direct_room(me, other).await?
        {
            return Ok((room, false));
        }
        METRICS.refused(Bound::RoomsCreated);
        return Err(ApiError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        });
    }
    let created = state.store.create_room(new, now_ms()).await;
    // Finding the pair's direct room made nothing; a refusal still cost the attempt, so that
    // asking again and again for what the caps refuse is rate-limited too.
    if matches!(created, Ok(CreatedRoom { created: None, .. })) {
        state.limits.rooms_created.give_back(&me);
    }
    let CreatedRoom {
        view: room,
        created,
    } = created.inspect_err(count_room_cap)?;
    if let Some(room_id) = created {
        for member in &room.members {
            announce_joined(state.hub.as_ref(), room_id, &room, member);
        }
    }
    Ok((room, created.is_some()))
}

/// An admin of a group renames it or makes a member an admin; the room hears of a change
/// (`room_updated`). Renaming follows the rules of a new room's name.
pub async fn manage_room(
    state: &AppState,
    room: RoomRef,
    by: UserId,
    change: RoomChange,
) -> Result<Room, ApiError> {
    let change = match change {
        RoomChange::Rename(name) => {
            let name = name.trim().to_string();
            if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
                return Err(ApiError::validation(
                    "name",
                    format!("must be 1 to {MAX_NAME_CHARS} characters"),
                ));
            }
            RoomChange::Rename(name)
        }
        other => other,
    };
    let hub = state.hub.clone();
    let on_commit = Box::new(move |m: &Managed| {
        if m.changed {
            let frame = ServerFrame::RoomUpdated {
                room_id: &m.room.public_id,
                name: m.view.name.as_deref(),
                admins: &m.view.admins,
            };
            hub.publish(
                m.room.id,
                Event::new(m.room.id, EventKind::RoomUpdated, &frame),
            );
        }
    });
    let managed = state.store.manage_room(room, by, change, on_commit).await?;
    Ok(managed.view)
}

/// The room caps of the configuration.
fn room_caps(state: &AppState) -> RoomCaps {
    let l = &state.config.limits;
    RoomCaps {
        max_rooms_per_user: l.max_rooms_per_user,
        max_rooms_added_by_one_user: l.max_rooms_added_by_one_user,
    }
}

/// Counts a refusal by the room caps in `/metrics`.
fn count_room_cap(e: &StoreError) {
    match e {
        StoreError::Refused(Refusal::YouHaveTooManyRooms | Refusal::TheyHaveTooManyRooms) => {
            METRICS.refused(Bound::RoomsPerUser);
        }
        StoreError::Refused(Refusal::TooManyRoomsFromYou) => {
            METRICS.refused(Bound::RoomsAddedByOneUser);
        }
        _ => {}
    }
}

/// `by` adds `user` to a group room; the room hears of it, and the new member's all-rooms
/// sockets follow it. Returns the room as `by` sees it and whether `user` is new to it.
pub async fn add_member(
    state: &AppState,
    room: RoomRef,
    by: UserId,
    user_id: UserId,
) -> Result<(Room, bool), ApiError> {
    let hub = state.hub.clone();
    let on_commit = Box::new(move |outcome: &MemberAdded| publish_joined(hub.as_ref(), outcome));
    let MemberAdded {
        view,
        joined: added,
    } = state
        .store
        .add_member(room, by, user_id, room_caps(state), now_ms(), on_commit)
        .await
        .inspect_err(count_room_cap)?;
    Ok((view, added.is_some()))
}

/// `by` removes `user` from a group room (themselves, or anyone if `by` created it). In-band:
/// every socket of the removed user closes on the event, and nothing published after it
/// reaches them.
pub async fn remove_member(
    state: &AppState,
    room: RoomRef,
    by: UserId,
    user_id: UserId,
) -> Result<(), ApiError> {
    let hub = state.hub.clone();
    let on_commit = Box::new(move |removed: &MemberRemoved| publish_removed(hub.as_ref(), removed));
    state
        .store
        .remove_member(room, by, user_id, on_commit)
        .await?;
    Ok(())
}

/// Tells the room a member joined, and has the new member's all-rooms sockets follow it.
pub fn publish_joined(hub: &dyn crate::hub::Hub, outcome: &MemberAdded) {
    if let Some(j) = &outcome.joined {
        hub.publish(
            j.room.id,
            member_event(j.room.id, &j.room.public_id, &j.user, true),
        );
        announce_joined(hub, j.room.id, &j.view, &j.user);
    }
}

/// Tells the room a member left (with the bots of the hooks that ended with it).
/// In-band: every socket of a removed user closes on its event, and nothing published after
/// it reaches them.
pub fn publish_removed(hub: &dyn crate::hub::Hub, removed: &MemberRemoved) {
    let room = &removed.room;
    for user in std::iter::once(&removed.user).chain(&removed.hook_bots) {
        hub.publish(room.id, member_event(room.id, &room.public_id, user, false));
        if hub.unfollow(room.id, user.id) {
            hub.publish(
                room.id,
                crate::hub::presence_event(room.id, &room.public_id, user, false),
            );
        }
    }
}

/// Tells the other members that `user` is typing (or stopped); extra events over the rate are
/// dropped.
pub fn typing(state: &AppState, user: &User, room: &RoomRef, typing: bool) {
    let key = (user.id, room.id);
    if state.limits.typing.take(&key).is_err() {
        return;
    }
    let event = Event::new(
        room.id,
        EventKind::Typing { from: user.id },
        &ServerFrame::Typing {
            room_id: &room.public_id,
            user,
            typing,
        },
    );
    state.hub.publish(room.id, event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Millis, ReplyTo, Seq, UserId};

    /// The frame everyone but the sender gets is exactly the message serialized without its
    /// `client_id`, even when the text and the quote spell the field out; the sender's has it.
    #[test]
    fn the_shared_frame_is_the_message_without_its_client_id() {
        let message = Message {
            id: MessageId(7),
            room_id: "r".into(),
            sender: "alice".into(),
            sender_id: UserId(1),
            content: r#"say "client_id":"k\"1é" to me"#.into(),
            created: Millis(5),
            updated: Millis(5),
            is_read: false,
            client_id: Some("k\"1é".into()),
            edited: None,
            deleted: false,
            reply_to: Some(ReplyTo {
                id: MessageId(3),
                sender: "bob".into(),
                excerpt: r#""client_id":"k\"1é""#.into(),
            }),
            reactions: Vec::new(),
            mentions: Vec::new(),
            attachments: Vec::new(),
            seq: Seq(7),
        };
        let event = message_event(RoomId(1), &message);
        let mut public = message.clone();
        public.client_id = None;
        let frame = |m: &Message| {
            ServerFrame::Message {
                seq: m.seq,
                message: m,
            }
            .to_json()
        };
        assert_eq!(event.frame.as_str(), frame(&public));
        assert_eq!(event.frame_for(UserId(2)).as_str(), frame(&public));
        assert_eq!(event.frame_for(UserId(1)).as_str(), frame(&message));
        // Without a client_id there is one frame for all.
        public.id = MessageId(8);
        let plain = message_event(RoomId(1), &public);
        assert!(plain.own.is_none());
        assert_eq!(plain.frame_for(UserId(1)).as_str(), frame(&public));
    }
}

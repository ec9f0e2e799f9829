//! The store as the features see it: named operations, each one transaction, with no SQL or
//! connection in sight. [`super::Store`] (SQLite: one writer with group commit, a pool of
//! readers) implements it in `store::sqlite`; a second backend implements the same trait.
//!
//! Writes that others must hear about take an [`OnCommit`] hook. The store runs it once the
//! write committed, and hooks run in commit order, so events published from them reach
//! subscribers in id order.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use super::edits::Changed;
use super::messages::{Page, ReadMark};
use super::replay::Replayed;
use super::rooms::{RoomCursor, RoomRef};
use super::tokens::TokenRow;
use super::uploads::Upload;
use super::users::{Credentials, NewUser, UserQuery};
use super::{Result, StoreError};
use crate::membership::RoomCaps;
use crate::model::{Auth, Message, MessageId, Room, RoomId, Seq, User, UserId};

/// What a store operation returns: a future of its result.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Runs after a write committed, in commit order.
pub type OnCommit<T> = Box<dyn FnOnce(&T) + Send>;

/// A message sent and not yet known to be stored: resolves to the message and whether it is
/// new (`false`: a retry of a `client_id` already stored).
pub type Sending = Pin<Box<dyn Future<Output = Result<(Message, bool)>> + Send>>;

pub use crate::model::Refusal;

impl From<Refusal> for StoreError {
    fn from(r: Refusal) -> Self {
        StoreError::Refused(r)
    }
}

/// A room to create.
pub struct NewRoom {
    pub public_id: String,
    pub name: Option<String>,
    pub creator: UserId,
    /// Sorted, without duplicates, the creator included.
    pub members: Vec<UserId>,
    /// The caps the creator and the other members must be within.
    pub caps: RoomCaps,
}

/// A created room as its creator sees it; `created` is `None` when the direct room of the
/// pair existed already.
pub struct CreatedRoom {
    pub view: Room,
    pub created: Option<RoomId>,
}

/// A message to store.
pub struct NewMessage {
    pub room: RoomRef,
    pub sender: User,
    /// Validated: trimmed, within the length limit.
    pub content: String,
    pub client_id: Option<String>,
    /// The message of the same room this one answers.
    pub reply_to: Option<MessageId>,
    /// The sender's uploads to attach (at most `MAX_ATTACHMENTS`, distinct), in order.
    pub attachments: Vec<String>,
}

/// A user who just joined a room, and the room as they see it.
pub struct Joined {
    pub room: RoomRef,
    pub user: User,
    pub view: Room,
}

/// The room as the adding member sees it, and who joined (`None`: already a member).
pub struct MemberAdded {
    pub view: Room,
    pub joined: Option<Joined>,
}

/// Who left which room.
pub struct MemberRemoved {
    pub room: RoomRef,
    pub user: User,
    /// The bots of the hooks that ended with it (the user's own, or the user's, if it was a
    /// hook's bot): they left the room too.
    pub hook_bots: Vec<User>,
}

/// A hook to create: its name, the new bot's account, the secret's digest.
pub struct NewHook {
    pub name: String,
    pub bot: super::users::NewUser,
    pub digest: Vec<u8>,
    /// At most this many hooks in the room, and made by one user in all.
    pub max_per_room: i64,
    pub max_per_user: i64,
}

/// A created hook, and its bot joining the room.
pub struct HookCreated {
    pub hook: super::hooks::Hook,
    pub added: MemberAdded,
}

/// Where a room stands: its newest message and its newest change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub id: MessageId,
    pub seq: Seq,
}

/// What an admin changes about a group.
#[derive(Debug, Clone)]
pub enum RoomChange {
    /// A new name (validated).
    Rename(String),
    /// Makes a member an admin.
    MakeAdmin(UserId),
}

/// A group after an admin's change, as the admin sees it, and whether anything changed.
pub struct Managed {
    pub room: RoomRef,
    pub view: Room,
    pub changed: bool,
}

/// One page of what a socket missed.
pub struct ReplayPage {
    pub changes: Vec<Replayed>,
    pub more: bool,
}

pub trait ChatStore: Send + Sync {
    // Accounts and sessions

    /// The live session whose token has this digest.
    fn session(&self, digest: Vec<u8>) -> Fut<'_, Option<Auth>>;
    /// The account a typed username refers to, with its password hash.
    fn credentials(&self, typed: String) -> Fut<'_, Option<Credentials>>;
    /// Creates an account; refused with `UsernameTaken` or `UsernameLookAlike`.
    fn create_user(&self, new: NewUser, now: i64) -> Fut<'_, User>;
    /// Stores a new token's digest (and prunes the user's expired ones); returns its id.
    fn open_session(
        &self,
        user: UserId,
        digest: Vec<u8>,
        now: i64,
        expires_at: i64,
    ) -> Fut<'_, i64>;
    /// Revokes one token.
    fn end_session(&self, token_id: i64) -> Fut<'_, ()>;
    /// The user's live sessions.
    fn sessions_of(&self, user: UserId, now: i64) -> Fut<'_, Vec<TokenRow>>;
    /// Revokes one of the user's sessions; `false` if it has none with that id.
    fn end_session_of(&self, user: UserId, id: i64) -> Fut<'_, bool>;
    /// Revokes every session of the user; returns their ids.
    fn end_sessions_of(&self, user: UserId) -> Fut<'_, Vec<i64>>;
    /// One page of the directory of active users, and the total.
    fn directory(&self, query: UserQuery) -> Fut<'_, (i64, Vec<User>)>;
    /// Which of `ids` are deactivated accounts.
    fn inactive_among(&self, ids: Vec<UserId>) -> Fut<'_, Vec<UserId>>;

    /// Which of these token ids no longer exist.
    fn revoked_among(&self, ids: Vec<i64>) -> Fut<'_, Vec<i64>>;

    // Rooms

    /// A page of the user's rooms, most recent activity first, after `before`; and the
    /// cursor of the next page, if there is one.
    fn rooms_page(
        &self,
        user: UserId,
        before: Option<RoomCursor>,
        limit: u32,
    ) -> Fut<'_, (Vec<Room>, Option<RoomCursor>)>;
    /// The user's rooms, as references.
    fn room_refs_of(&self, user: UserId) -> Fut<'_, Vec<RoomRef>>;
    /// The user's rooms, each with where it stands, in one snapshot.
    fn room_heads_of(&self, user: UserId) -> Fut<'_, Vec<(Head, RoomRef)>>;
    /// The room, if the user is one of its members.
    fn room_for_member(&self, public_id: String, user: UserId) -> Fut<'_, Option<RoomRef>>;
    /// In one snapshot: the session of the token with this digest, the room if that user is
    /// a member, and where the room stands. Refused `Unauthenticated` or `NotFound`.
    fn member_room(&self, digest: Vec<u8>, public_id: String) -> Fut<'_, (Auth, RoomRef, Head)>;
    /// Where the room stands, if the user is a member.
    fn head_if_member(&self, room: RoomId, user: UserId) -> Fut<'_, Option<Head>>;
    /// The direct room of `me` and `other`, if there is one and `me` is in it.
    fn direct_room(&self, me: UserId, other: UserId) -> Fut<'_, Option<Room>>;
    /// Creates a room, or finds the direct room of the pair. Refused `UnknownUsers`, and past
    /// the caps `YouHaveTooManyRooms`, `TheyHaveTooManyRooms`, `TooManyRoomsFromYou`.
    fn create_room(&self, new: NewRoom, now: i64) -> Fut<'_, CreatedRoom>;
    /// `by` adds `user` to a group room. Refused `DirectRoom`, `NotFound`, `NoSuchUser`, and
    /// past the caps `TheyHaveTooManyRooms`, `TooManyRoomsFromYou`.
    fn add_member(
        &self,
        room: RoomRef,
        by: UserId,
        user: UserId,
        caps: RoomCaps,
        now: i64,
        on_commit: OnCommit<MemberAdded>,
    ) -> Fut<'_, MemberAdded>;
    /// An admin of the group changes it. Refused `NotFound` (not a member, or making a
    /// non-member an admin), `DirectRoom`, `NotAdmin`.
    fn manage_room(
        &self,
        room: RoomRef,
        by: UserId,
        change: RoomChange,
        on_commit: OnCommit<Managed>,
    ) -> Fut<'_, Managed>;
    /// `by` removes `user` (themselves from any room, or anyone from a group `by` is an admin
    /// of). Refused `NotFound`, `DirectRoom`, `NotAdmin`.
    fn remove_member(
        &self,
        room: RoomRef,
        by: UserId,
        user: UserId,
        on_commit: OnCommit<MemberRemoved>,
    ) -> Fut<'_, MemberRemoved>;

    // Bots

    /// `owner` makes a bot with its first token (`digest`, never expiring). Refused
    /// `TooManyBots` past `max` active bots of the owner, `UsernameTaken`, `UsernameLookAlike`.
    fn create_owned_bot(
        &self,
        owner: UserId,
        new: super::users::NewUser,
        digest: Vec<u8>,
        max: i64,
        now: i64,
    ) -> Fut<'_, User>;

    /// The active bots `owner` made.
    fn owned_bots(&self, owner: UserId) -> Fut<'_, Vec<User>>;

    /// `owner` gives its bot `bot` a new token (`digest`), revoking the others; their ids.
    /// Refused `NotFound` if `bot` is not an active bot of `owner`.
    fn replace_bot_token(
        &self,
        owner: UserId,
        bot: UserId,
        digest: Vec<u8>,
        now: i64,
    ) -> Fut<'_, Vec<i64>>;

    /// `owner` deactivates its bot `bot`; the ids of the tokens revoked. Refused `NotFound`.
    fn deactivate_bot(&self, owner: UserId, bot: UserId) -> Fut<'_, Vec<i64>>;

    // Hooks

    /// `by`, a member of the group `room`, creates a hook: its bot's account is made and joins
    /// the room. Refused `NotFound` (not a member), `DirectRoom`, `TooManyHooks`,
    /// `UsernameTaken`.
    fn create_hook(
        &self,
        room: RoomRef,
        by: UserId,
        new: NewHook,
        now: i64,
        on_commit: OnCommit<HookCreated>,
    ) -> Fut<'_, HookCreated>;

    /// The hooks of `room`, oldest first.
    fn hooks(&self, room: RoomRef) -> Fut<'_, Vec<super::hooks::Hook>>;

    /// `by` (its creator, or an admin of the room) ends hook `id` of `room`: its bot leaves.
    /// Refused `NotFound`, `NotAdmin`.
    fn delete_hook(
        &self,
        room: RoomRef,
        by: UserId,
        id: i64,
        on_commit: OnCommit<MemberRemoved>,
    ) -> Fut<'_, MemberRemoved>;

    /// The bot and room a hook secret's digest posts as, while the hook is live.
    fn hook_sender(&self, digest: Vec<u8>) -> Fut<'_, Option<(User, RoomRef)>>;

    // Messages

    /// In one snapshot: the session of the token, the membership, and a history page as the
    /// JSON body `{room_id, results, has_more}`. Refused `Unauthenticated` or `NotFound`.
    fn history_json(
        &self,
        digest: Vec<u8>,
        public_id: String,
        page: Page,
        limit: u32,
    ) -> Fut<'_, Vec<u8>>;
    /// Queues a message and returns at once. Sends submitted one after another commit (and
    /// run their hooks) in that order. Fails with `NotMember` if the sender is no longer a
    /// member when it commits.
    fn submit_message(
        &self,
        message: NewMessage,
        now: i64,
        on_commit: OnCommit<(Message, bool)>,
    ) -> Result<Sending>;
    /// Moves the user's read mark up to `message`; `None`: no such message for this user.
    fn mark_read(
        &self,
        message: MessageId,
        user: UserId,
        on_commit: OnCommit<Option<ReadMark>>,
    ) -> Fut<'_, Option<ReadMark>>;
    /// `by` edits message `id` (content already validated). Refused `NotFound` (no such message
    /// in a room `by` is in), `NotAuthor`, `MessageDeleted`.
    fn edit_message(
        &self,
        by: UserId,
        id: MessageId,
        content: String,
        now: i64,
        on_commit: OnCommit<Changed>,
    ) -> Fut<'_, Changed>;
    /// `by` deletes message `id`, leaving a tombstone. Refused `NotFound`, `MayNotDelete`.
    fn delete_message(
        &self,
        by: UserId,
        id: MessageId,
        now: i64,
        on_commit: OnCommit<Changed>,
    ) -> Fut<'_, Changed>;
    /// A page of the messages matching `fts` (an expression made by
    /// the search query parser) in the rooms `user` is in now (or only `room`), newest
    /// first, below `before`; and the next page's cursor.
    fn search(
        &self,
        user: UserId,
        fts: String,
        room: Option<String>,
        before: Option<MessageId>,
        limit: u32,
    ) -> Fut<'_, (Vec<Message>, Option<MessageId>)>;
    /// A page of the messages that mention `user` in rooms they are in now, newest first, below
    /// `before`; and the next page's cursor.
    fn mentions_of(
        &self,
        user: UserId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Fut<'_, (Vec<Message>, Option<MessageId>)>;
    /// `by` adds (`on`) or takes back their reaction `emoji` (one emoji, validated) to message
    /// `id`. Refused `NotFound`, `MessageDeleted`, `TooManyReactions`.
    fn react(
        &self,
        by: UserId,
        id: MessageId,
        emoji: String,
        on: bool,
        on_commit: OnCommit<Changed>,
    ) -> Fut<'_, Changed>;
    /// The changes after `after`, in position order (see [`super::replay::changes`]): of
    /// `room` if the user is still a member of it (`None` if not), or of all the user's rooms.
    fn replay_page(
        &self,
        room: Option<RoomRef>,
        user: UserId,
        after: Seq,
        limit: u32,
    ) -> Fut<'_, Option<ReplayPage>>;

    // Files

    /// Stores an upload's row (its files are in place); refused `UploadQuota` if its owner's
    /// uploads would then hold more than `quota` bytes.
    fn create_upload(&self, upload: Upload, quota: u64) -> Fut<'_, ()>;
    /// The bytes `owner`'s uploads hold.
    fn upload_usage(&self, owner: UserId) -> Fut<'_, u64>;
    /// Upload `public_id` if `viewer` may download it (see [`super::uploads::visible`]).
    fn visible_upload(&self, public_id: String, viewer: UserId) -> Fut<'_, Option<Upload>>;
    /// Removes the uploads no message attached made before `before`; how many.
    fn expire_uploads(&self, before: i64) -> Fut<'_, usize>;
    /// Every file name (SHA-256) an upload row names.
    fn referenced_files(&self) -> Fut<'_, HashSet<String>>;
    /// Uploads stored, and their bytes.
    fn upload_totals(&self) -> Fut<'_, (u64, u64)>;

    // Operations

    /// Proves the database answers reads and takes writes; returns the schema version.
    fn health(&self) -> Fut<'_, i64>;
    /// What waits in the store's queues, and whether its storage fails writes; at once.
    fn pressure(&self) -> super::Pressure;
    /// The newest message id of the whole server.
    fn last_message_id(&self) -> Fut<'_, i64>;
    /// Commits every queued write and closes; later writes fail.
    fn close(&self) -> Fut<'_, ()>;
}

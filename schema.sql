-- chat-server schema: the single source of truth for the database layout.
--
-- The file is a list of migrations. Each starts with a `-- migration: N` line and runs once,
-- in order, inside one transaction that also sets `PRAGMA user_version = N`. Never edit a
-- migration that has been released; append a new one.
--
-- Times are Unix milliseconds (UTC). Ids are SQLite rowids, so they only grow.

-- migration: 1

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL,
    -- lower-cased username: uniqueness is case-insensitive
    username_key  TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    first_name    TEXT    NOT NULL DEFAULT '',
    last_name     TEXT    NOT NULL DEFAULT '',
    email         TEXT    NOT NULL DEFAULT '',
    date_joined   INTEGER NOT NULL,
    is_active     INTEGER NOT NULL DEFAULT 1
);
-- the user directory is ordered by first name, then id
CREATE INDEX users_by_first_name ON users (first_name, id);

-- Bearer tokens. Only the SHA-256 digest of a token is stored.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest      BLOB    NOT NULL UNIQUE,
    created     INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX tokens_by_user ON tokens (user_id);

CREATE TABLE rooms (
    id              INTEGER PRIMARY KEY,
    -- the room id clients see: random, URL-safe, unguessable
    public_id       TEXT    NOT NULL UNIQUE,
    name            TEXT,
    is_direct       INTEGER NOT NULL,
    -- "<low user id>:<high user id>" for a direct room, so a pair has at most one
    direct_key      TEXT    UNIQUE,
    creator_id      INTEGER REFERENCES users (id),
    created         INTEGER NOT NULL,
    last_message_id INTEGER,
    -- time of the last message, or of creation: orders the room list
    last_activity   INTEGER NOT NULL
);

-- One read mark per member and room: every message with id <= last_read_id is read.
CREATE TABLE room_members (
    room_id      INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_read_id INTEGER NOT NULL DEFAULT 0,
    joined       INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON room_members (user_id, room_id);

CREATE TABLE messages (
    id        INTEGER PRIMARY KEY,
    room_id   INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    sender_id INTEGER NOT NULL REFERENCES users (id),
    content   TEXT    NOT NULL,
    created   INTEGER NOT NULL,
    updated   INTEGER NOT NULL,
    client_id TEXT
);
-- history pages and unread counts walk one room by id
CREATE INDEX messages_by_room ON messages (room_id, id);
-- idempotent sends: one message per (room, sender, client_id)
CREATE UNIQUE INDEX messages_by_client_id ON messages (room_id, sender_id, client_id)
    WHERE client_id IS NOT NULL;

-- migration: 2

-- Usernames compare by NFKC and full case folding, and a name that looks like an existing one
-- (one UTS #39 confusable skeleton) is refused. The server recomputes every `username_key` and
-- fills `username_skeleton` in this migration's transaction (`store::users::rekey`); where two
-- existing accounts now fold to one key, the older takes it and the newer logs in by its exact
-- name.
ALTER TABLE users ADD COLUMN username_skeleton TEXT NOT NULL DEFAULT '';
CREATE INDEX users_by_skeleton ON users (username_skeleton);
CREATE INDEX users_by_username ON users (username);

-- migration: 3

-- Who put each member in the room (NULL: they created it or were there from the start of a
-- room they created), so one user can be kept from putting another in more than
-- `limits.max_rooms_added_by_one_user` rooms. Existing members put in by a room's creator
-- are counted as added by the creator.
ALTER TABLE room_members ADD COLUMN added_by INTEGER REFERENCES users (id) ON DELETE SET NULL;
UPDATE room_members SET added_by = (SELECT creator_id FROM rooms WHERE rooms.id = room_members.room_id)
 WHERE user_id != (SELECT creator_id FROM rooms WHERE rooms.id = room_members.room_id);

-- migration: 4

-- One ordered sequence of changes: a new message, an edit, a deletion (and, from migration 5, a
-- reaction change) each take the next position, server-wide, in commit order. A new message's
-- position is its id; every later change to it is a row of `changes`, whose `seq` is the
-- position it took. `?since=<seq>` replays both, merged in position order: each message's
-- creation and each later change, every one shown as the message is now. The next position is
-- one past the largest of any message id and any change.
ALTER TABLE messages ADD COLUMN edited INTEGER;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
CREATE TABLE changes (
    seq        INTEGER PRIMARY KEY,
    room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE
);
CREATE INDEX changes_by_room ON changes (room_id, seq);

-- migration: 5

-- Replies, reactions and mentions. `reply_to` is a message of the same room; `reactions` counts
-- the message's rows in `reactions`, so reading a message without any costs nothing more;
-- `mentions` lists the ids of the members its text mentions ("3,7"), as resolved when it was
-- sent or last edited, and `mentions` the table holds the same for counting and listing.
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN reactions INTEGER NOT NULL DEFAULT 0;
CREATE TABLE reactions (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji      TEXT    NOT NULL,
    created    INTEGER NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
) WITHOUT ROWID;
ALTER TABLE messages ADD COLUMN mentions TEXT;
CREATE TABLE mentions (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, room_id, message_id)
) WITHOUT ROWID;
CREATE INDEX mentions_by_user ON mentions (user_id, message_id);
CREATE INDEX mentions_by_message ON mentions (message_id);

-- migration: 6

-- Full-text search over message content (words, phrases, prefixes; diacritics removed), kept in
-- step with every insert and edit by triggers, so in the same transaction as the change; a
-- deletion empties the content and so takes it out of the index. Built here for the messages
-- that exist already.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (NEW.id, NEW.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages
BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', OLD.id, OLD.content);
    INSERT INTO messages_fts (rowid, content) VALUES (NEW.id, NEW.content);
END;

-- migration: 7

-- Group admins: a group's creator is one; admins make others admins, rename the group, remove
-- members and delete anyone's messages. Direct rooms have none.
ALTER TABLE room_members ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
UPDATE room_members SET admin = 1
 WHERE EXISTS (SELECT 1 FROM rooms r
               WHERE r.id = room_members.room_id AND r.is_direct = 0
                 AND r.creator_id = room_members.user_id);

-- migration: 8

-- The full-text index is written once per write transaction instead of once per message.
-- FTS5 writes out what it holds in memory as a new index segment at every savepoint, and every
-- write the server makes runs in one, so triggers that indexed each message made a segment of
-- each message (and the merges of all of them). The triggers now only queue the change in
-- `search_queue`; the server's writer applies the queue to the index just before it commits,
-- so still in the transaction that made the change, and empties it (`store::search_index`).
-- Whatever another program leaves queued is applied when the server starts or commits next.
-- The index is made again without per-row token counts (`columnsize=0`: nothing ranks by
-- them), takes a deleted or edited message's old words out of its pages at once
-- (`secure-delete`) instead of marking them deleted until a merge, and merges its segments
-- eight at a time rather than four (`automerge`: fewer rewrites of each entry).
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_update;
DROP TABLE messages_fts;
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content,
    content = 'messages',
    content_rowid = 'id',
    columnsize = 0,
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 1);
INSERT INTO messages_fts (messages_fts, rank) VALUES ('automerge', 8);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
CREATE TABLE search_queue (
    seq        INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL,
    content    TEXT    NOT NULL,
    -- 1: take `content` out of the index for `message_id`; 0: put it in
    remove     INTEGER NOT NULL
);
CREATE TRIGGER search_queue_insert AFTER INSERT ON messages
BEGIN
    INSERT INTO search_queue (message_id, content, remove) VALUES (NEW.id, NEW.content, 0);
END;
CREATE TRIGGER search_queue_update AFTER UPDATE OF content ON messages
BEGIN
    INSERT INTO search_queue (message_id, content, remove) VALUES (OLD.id, OLD.content, 1);
    INSERT INTO search_queue (message_id, content, remove)
        SELECT NEW.id, NEW.content, 0 WHERE NEW.content != '';
END;
CREATE TRIGGER search_queue_delete AFTER DELETE ON messages
BEGIN
    INSERT INTO search_queue (message_id, content, remove) VALUES (OLD.id, OLD.content, 1);
END;

-- migration: 9

-- Bots: accounts that are not people. A bot has no password (its hash is `!`, which no
-- password verifies), logs in only with the long-lived tokens `chat-server bot create` and
-- `bot token` print, and is shown as a bot (`is_bot`) wherever its user is.
ALTER TABLE users ADD COLUMN is_bot INTEGER NOT NULL DEFAULT 0;

-- migration: 10

-- Incoming webhooks: a room member creates one and gets a secret URL; whatever posts to it
-- speaks in the room as the hook's own bot, a member of the room like any other. Only the
-- secret's SHA-256 digest is kept. A hook ends when it is deleted, when its creator leaves
-- or is removed from the room, and when its bot is removed.
CREATE TABLE hooks (
    id         INTEGER PRIMARY KEY,
    room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    creator_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    bot_id     INTEGER NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    digest     BLOB    NOT NULL UNIQUE,
    created    INTEGER NOT NULL
);
CREATE INDEX hooks_by_room ON hooks (room_id, creator_id);
CREATE INDEX hooks_by_creator ON hooks (creator_id);

-- migration: 11

-- Bots made over the API belong to the person who made them (`owner_id`); the owner gives
-- them new tokens and deactivates them, and deactivating the owner deactivates them too.
-- Bots made by the operator (`chat-server bot create`) have no owner.
ALTER TABLE users ADD COLUMN owner_id INTEGER REFERENCES users (id);
CREATE INDEX users_by_owner ON users (owner_id) WHERE owner_id IS NOT NULL;

-- migration: 12

-- Always empty: while the disk is full or failing, the writer commits a row of 64 KiB here
-- and deletes it in the same transaction, once a second, to learn when it can store again.
CREATE TABLE storage_probe (bytes BLOB NOT NULL);

-- migration: 13

-- Files. Each upload is a row; its bytes are a file in the files directory (`--files`, by
-- default `<db>.files/`) named by their SHA-256, one file for every upload of the same bytes,
-- and so are its thumbnails. A file is in place (written, synced, renamed) before the row that
-- names it commits, and is removed only once no row names it. An upload is its uploader's
-- until a message attaches it (`message_id`, at `position` among the message's files), then
-- the message's room's: its members may download it. Uploads no message attached are removed
-- after `limits.unattached_upload_secs`, a deleted message's at once.
CREATE TABLE uploads (
    id           INTEGER PRIMARY KEY,
    public_id    TEXT    NOT NULL UNIQUE,
    owner_id     INTEGER NOT NULL REFERENCES users (id),
    sha256       TEXT    NOT NULL,
    -- as the uploader gave it, for display; never a path
    filename     TEXT    NOT NULL,
    -- sniffed from the bytes
    content_type TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    -- an image the server could decode: its size as shown, and its thumbnails' files
    width        INTEGER,
    height       INTEGER,
    thumb_small  TEXT,
    thumb_large  TEXT,
    thumb_type   TEXT,
    created      INTEGER NOT NULL,
    message_id   INTEGER REFERENCES messages (id),
    position     INTEGER
);
CREATE INDEX uploads_by_message ON uploads (message_id, position) WHERE message_id IS NOT NULL;
CREATE INDEX uploads_unattached ON uploads (created) WHERE message_id IS NULL;
CREATE INDEX uploads_by_owner ON uploads (owner_id);
-- how many uploads a message carries: looked up only where there are some
ALTER TABLE messages ADD COLUMN attachments INTEGER NOT NULL DEFAULT 0;

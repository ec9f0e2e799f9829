//! Storage: every SQL statement of the server lives under this module.
//!
//! One SQLite database in WAL mode. Reads run on reader threads, one per connection of a pool
//! of read-only connections; writes go to one writer thread that owns the only write connection and
//! commits whatever is queued in one transaction (group commit). A write's caller is answered,
//! and its after-commit hook runs, only once the transaction has committed, in commit order.
//! A third thread copies the WAL into the database file (the `checkpoint` module), so commits do not
//! wait for that. The writer thread's loop is `writer`; `health` bounds the queues in front of
//! the threads and keeps the account of storage faults (a full disk); `preflight` checks a
//! database file before a server opens it, and holds the server's lock on it.
//!
//! The SQL by subject: `users`, `tokens`, `rooms`, `messages` (storing, reading and paging
//! messages), `edits` (edits, deletions, reactions: the later changes of a message), `replay`
//! (every change after a position, for sockets that resume), `lookups` (mentions and search
//! across a user's rooms), `search_index` (keeping the full-text index in step) and `admin`
//! (the operator's commands).
//!
//! `:memory:` maps to a named in-process database (SQLite's `memdb` VFS) so the writer and
//! the readers share it.

pub mod admin;
pub mod api;
mod checkpoint;
pub mod edits;
mod health;
pub mod hooks;
pub mod lookups;
pub mod messages;
pub mod preflight;
pub mod replay;
pub mod rooms;
pub mod search_index;
mod sqlite;
pub mod tokens;
pub mod uploads;
pub mod users;
mod writer;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, watch};

pub use api::{ChatStore, Refusal};
use checkpoint::Checkpointer;
pub use checkpoint::Progress as CheckpointProgress;
use health::{Queue, Storage};

/// The schema, as migrations; see the comment at the top of `schema.sql`.
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// How much of the database file each connection maps into memory.
const MMAP_BYTES: i64 = 1 << 30;

/// The WAL file is cut back to this size when it starts over after a checkpoint, so a burst
/// of writes does not leave a large file behind (a steady load needs about this much).
const JOURNAL_SIZE_LIMIT: i64 = 4 << 20;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Prepared statements the writer connection keeps: more than it has distinct statements.
const WRITER_STATEMENTS: usize = 128;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    #[error("connection pool error: {0}")]
    Pool(String),
    #[error("the database writer has stopped")]
    WriterGone,
    /// The queue of the readers or of the writer is full: refused at once.
    #[error("the database has more work queued than it may")]
    Overloaded,
    /// The storage is failing (see [`StoreError::is_storage_fault`]); the cause.
    #[error("the database cannot store writes: {0}")]
    StorageFull(String),
    #[error("invalid schema: {0}")]
    Schema(String),
    /// The database cannot be served as it is (see `preflight`).
    #[error("{0}")]
    Startup(String),
    /// The user acting on a room is not, or no longer, one of its members.
    #[error("not a member of the room")]
    NotMember,
    /// Refused for what the store found (see [`Refusal`]).
    #[error("refused: {0:?}")]
    Refused(Refusal),
    #[error("{0}")]
    Other(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(e))
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Pool(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a write job leaves behind once its statements ran: called with the transaction's fate.
type Completion = Box<dyn FnOnce(Result<()>) + Send>;
/// A write's statements, run on the connection (or, with `None`, refused unrun); besides
/// its completion, the error it failed with if the storage failed it.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (Completion, Option<StoreError>) + Send>;
/// A read, run on a reader thread with a connection (or the pool's error).
type ReadJob = Box<dyn FnOnce(Result<&Connection>) + Send>;

/// A submitted write: resolves once its transaction committed (or failed).
#[must_use = "a write is only known to be durable once this resolves"]
pub struct Pending<T>(oneshot::Receiver<Result<T>>);

impl<T> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::WriterGone)))
    }
}

/// What the writer thread is asked to do.
enum Command {
    Write(Job),
    /// Commit what is queued before this, checkpoint the WAL into the database file, and stop.
    Close(oneshot::Sender<Result<()>>),
}

/// How a [`Store`] is sized.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Read-only connections, each with a thread of its own.
    pub read_connections: u32,
    /// Reads waiting for a reader thread, past which a read is refused (`Overloaded`).
    pub max_queued_reads: usize,
    /// Writes waiting for the writer, past which a write is refused (`Overloaded`).
    pub max_queued_writes: usize,
}

impl StoreOptions {
    pub fn new(read_connections: u32) -> StoreOptions {
        StoreOptions {
            read_connections,
            max_queued_reads: 1024,
            max_queued_writes: 4096,
        }
    }
}

/// What the store has queued, and whether its storage is failing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub queued_reads: usize,
    pub queued_writes: usize,
    pub storage_failing: bool,
}

/// Cheap handle to the database; clone freely.
#[derive(Clone)]
pub struct Store {
    /// Queue of the reader threads, each of which takes a pooled read-only connection per job.
    readers: crossbeam_channel::Sender<ReadJob>,
    read_queue: Arc<Queue>,
    writer: mpsc::Sender<Command>,
    write_queue: Arc<Queue>,
    storage: Arc<Storage>,
    /// The background checkpointer's progress; `None` for `:memory:`, which has no WAL.
    checkpoints: Option<watch::Receiver<CheckpointProgress>>,
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

fn apply_pragmas(conn: &Connection, memory: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if !memory {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Read pages straight from the mapped file instead of a `pread` into the page cache
        // each: history reads touch pages all over a large database.
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    }
    Ok(())
}

/// Applies every migration of `schema.sql` newer than the database's `user_version`.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let path = conn.path().unwrap_or_default().to_string();
    preflight::newer_than_known(Path::new(&path), current, last_migration()?)?;
    for (version, sql) in migrations()? {
        if version <= current {
            continue;
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        if version == REKEY_MIGRATION {
            log_rekey(&users::rekey(&tx)?);
        }
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}

/// The migration that adds `username_skeleton`, after which every key is computed again.
const REKEY_MIGRATION: i64 = 2;

fn log_rekey(report: &users::RekeyReport) {
    tracing::info!(
        accounts = report.accounts,
        rekeyed = report.rekeyed,
        "usernames now compare case-folded and normalised"
    );
    for (older, newer) in &report.same_key {
        tracing::warn!(
            older,
            newer,
            "two accounts' names fold to one key: the older takes it; the newer logs in only by \
             its exact name"
        );
    }
    for (older, newer) in &report.look_alike {
        tracing::warn!(
            older,
            newer,
            "two accounts' names look alike; both keep working"
        );
    }
}

/// Indexes the changes of message text that another program (a restore, an operator's
/// `sqlite3`, a benchmark's seeding) committed without applying them to the full-text index.
fn index_leftovers(conn: &mut Connection) -> Result<()> {
    // An empty queue leaves the index unopened until the first message.
    let queued = conn
        .prepare("SELECT 1 FROM search_queue LIMIT 1")?
        .exists([])?;
    if !queued {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied = search_index::apply_queue(&tx)?;
    tx.commit()?;
    if applied > 0 {
        tracing::info!(
            changes = applied,
            "indexed message changes left for the search index"
        );
    }
    Ok(())
}

/// The version of the newest migration: the schema this binary writes.
fn last_migration() -> Result<i64> {
    Ok(migrations()?.last().map_or(0, |(v, _)| *v))
}

/// Splits `schema.sql` at its `-- migration: N` markers.
fn migrations() -> Result<Vec<(i64, &'static str)>> {
    let mut out = Vec::new();
    let mut rest = SCHEMA;
    // A marker is a whole line: `-- migration: N`.
    const MARK: &str = "\n-- migration: ";
    while let Some(start) = rest.find(MARK) {
        let after = &rest[start + MARK.len()..];
        let line_end = after.find('\n').unwrap_or(after.len());
        let version: i64 = after[..line_end]
            .trim()
            .parse()
            .map_err(|_| StoreError::Schema(format!("bad marker {:?}", &after[..line_end])))?;
        let body = &after[line_end..];
        let end = body.find(MARK).unwrap_or(body.len());
        if out.last().is_some_and(|(v, _)| *v + 1 != version) || (out.is_empty() && version != 1) {
            return Err(StoreError::Schema(
                "migrations must be numbered 1, 2, 3, ...".into(),
            ));
        }
        out.push((version, &body[..end]));
        rest = &body[end..];
    }
    Ok(out)
}

/// Opens a connection with the schema applied: for unit tests and admin tools.
pub fn open_memory_for_tests() -> Connection {
    let mut conn = Connection::open_in_memory().expect("open in-memory database");
    apply_pragmas(&conn, true).expect("pragmas");
    migrate(&mut conn).expect("migrate");
    conn
}

/// Opens a database file for the command-line tools: WAL mode, migrated, beside a running
/// server if there is one (SQLite's locking keeps the two consistent).
pub fn open_for_admin(path: &str) -> Result<Connection> {
    if path == ":memory:" {
        return Err(StoreError::Other(
            "the admin commands need a database file, not :memory:".into(),
        ));
    }
    // A file this binary cannot serve is refused before anything opens it for writing.
    preflight::check_header(Path::new(path))?;
    preflight::check_schema(Path::new(path), last_migration()?)?;
    let mut conn = Connection::open(path)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Schema(format!(
            "could not switch {path} to WAL mode (got {mode})"
        )));
    }
    apply_pragmas(&conn, false)?;
    migrate(&mut conn)?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) the database at `path`, migrates it and starts the writer,
    /// with the default queue bounds.
    pub fn open(path: &str, read_connections: u32) -> Result<Store> {
        Store::open_with(path, StoreOptions::new(read_connections))
    }

    /// Opens (creating if needed) the database at `path`, migrates it and starts the writer.
    pub fn open_with(path: &str, options: StoreOptions) -> Result<Store> {
        let read_connections = options.read_connections;
        let memory = path == ":memory:";
        // Before anything opens the file for writing.
        let lock = if memory {
            None
        } else {
            let db = Path::new(path);
            let lock = preflight::prepare(db)?;
            preflight::check_header(db)?;
            preflight::check_schema(db, last_migration()?)?;
            Some(lock)
        };
        let (uri, flags) = if memory {
            let mut id = [0u8; 8];
            rand::fill(&mut id);
            (
                format!("file:/chat-server-{}?vfs=memdb", hex::encode(id)),
                OpenFlags::SQLITE_OPEN_URI,
            )
        } else {
            (path.to_string(), OpenFlags::empty())
        };

        let mut writer = Connection::open_with_flags(
            &uri,
            flags
                | OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        if !memory {
            let mode: String =
                writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Schema(format!(
                    "could not switch {} to WAL mode (got {mode})",
                    Path::new(path).display()
                )));
            }
        }
        apply_pragmas(&writer, memory)?;
        migrate(&mut writer)?;
        index_leftovers(&mut writer)?;
        // Every statement the writer runs stays prepared (rusqlite keeps 16 by default).
        writer.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);

        let manager = SqliteConnectionManager::file(&uri)
            .with_flags(flags | OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(move |c| apply_pragmas(c, memory));
        let pool = r2d2::Pool::builder()
            .max_size(read_connections)
            .min_idle(Some(1))
            // A local file does not break like a network connection; skip the probe query.
            .test_on_check_out(false)
            .build(manager)?;
        // As many threads as connections: a job never waits for another job's connection, and
        // a burst of reads queues here instead of waking a thread per read that then waits for
        // one.
        let (readers, jobs) = crossbeam_channel::unbounded::<ReadJob>();
        let read_queue = Arc::new(Queue::new(options.max_queued_reads));
        for _ in 0..read_connections {
            let (pool, jobs, queue) = (pool.clone(), jobs.clone(), read_queue.clone());
            std::thread::Builder::new()
                .name("sqlite-reader".into())
                .spawn(move || {
                    while let Ok(job) = jobs.recv() {
                        queue.leave();
                        // A panicking read fails only itself (its caller sees the dropped
                        // reply); the thread goes on serving the others.
                        let _ =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                match pool.get() {
                                    Ok(conn) => job(Ok(&conn)),
                                    Err(e) => job(Err(e.into())),
                                }
                            }));
                    }
                })
                .map_err(|e| StoreError::Pool(format!("cannot start reader thread: {e}")))?;
        }

        let (checkpointer, checkpoints) = if memory {
            (None, None)
        } else {
            let conn = Connection::open_with_flags(
                &uri,
                flags | OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            apply_pragmas(&conn, memory)?;
            let (checkpointer, progress) = Checkpointer::start(&writer, conn)?;
            (Some(checkpointer), Some(progress))
        };

        let (tx, rx) = mpsc::channel::<Command>();
        let write_queue = Arc::new(Queue::new(options.max_queued_writes));
        let storage = Arc::new(Storage::default());
        let writer_side = writer::Writer {
            lock,
            conn: writer,
            checkpointer,
            queue: write_queue.clone(),
            storage: storage.clone(),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_side.run(rx))
            .map_err(|e| StoreError::Pool(format!("cannot start writer thread: {e}")))?;
        Ok(Store {
            readers,
            read_queue,
            writer: tx,
            write_queue,
            storage,
            checkpoints,
        })
    }

    /// Runs `f` on a read-only connection, off the async workers, in one read transaction:
    /// every query of `f` sees the same snapshot, and the WAL read lock is taken once.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // Nobody waits for it any more (the request timed out or its client went away).
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(conn.and_then(|conn| in_read_transaction(conn, f)));
        });
        self.read_queue.enter()?;
        if self.readers.send(job).is_err() {
            self.read_queue.leave();
            return Err(StoreError::Pool("the reader threads have stopped".into()));
        }
        rx.await
            .map_err(|_| StoreError::Pool("a read was dropped unanswered".into()))?
    }

    /// Runs `f` in the writer's next transaction and answers once that transaction committed.
    /// If `f` fails, its own changes are rolled back and the rest of the batch still commits.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.write_then(f, |_| {}).await
    }

    /// Like [`Store::write`], and runs `after_commit` on the writer thread right after the
    /// commit, before the next batch: hooks run in commit order, so events published from
    /// them reach subscribers in id order.
    pub async fn write_then<T, F, H>(&self, f: F, after_commit: H) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        H: FnOnce(&T) + Send + 'static,
        T: Send + 'static,
    {
        self.submit_then(f, after_commit)?.await
    }

    /// Queues `f` for the writer and returns at once; the returned future resolves like
    /// [`Store::write_then`]. Jobs submitted one after another from one task run, commit and
    /// run their hooks in that order, so a caller can keep several writes in flight without
    /// reordering them.
    pub fn submit_then<T, F, H>(&self, f: F, after_commit: H) -> Result<Pending<T>>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        H: FnOnce(&T) + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(StoreError::Other("not run".into())),
            };
            let fault = match &result {
                Err(e) if e.is_storage_fault() => Some(e.clone()),
                _ => None,
            };
            let completion: Completion = Box::new(move |committed: Result<()>| {
                let outcome = committed.and(result).map_err(|e| match e {
                    e if e.is_storage_fault() => StoreError::StorageFull(e.to_string()),
                    e => e,
                });
                if let Ok(value) = &outcome {
                    after_commit(value);
                }
                let _ = tx.send(outcome);
            });
            (completion, fault)
        });
        self.write_queue.enter()?;
        if self.writer.send(Command::Write(job)).is_err() {
            self.write_queue.leave();
            return Err(StoreError::WriterGone);
        }
        Ok(Pending(rx))
    }

    /// What is queued, and whether the storage is failing.
    pub fn pressure(&self) -> Pressure {
        Pressure {
            queued_reads: self.read_queue.len(),
            queued_writes: self.write_queue.len(),
            storage_failing: self.storage.is_failing(),
        }
    }

    /// The background checkpointer's progress (`None` for `:memory:`, which has no WAL).
    pub fn checkpoints(&self) -> Option<watch::Receiver<CheckpointProgress>> {
        self.checkpoints.clone()
    }

    /// Commits every write queued so far, checkpoints the WAL into the main database file
    /// (truncating the WAL), and stops the writer: later writes fail with `WriterGone`.
    /// Called once at shutdown.
    pub async fn close(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Command::Close(tx))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// Runs `f` in one read transaction, whose `BEGIN` and `COMMIT` are prepared once per
/// connection.
fn in_read_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    if !conn.is_autocommit() {
        // Left open by a read that panicked.
        conn.execute_batch("ROLLBACK")?;
    }
    conn.prepare_cached("BEGIN")?.execute([])?;
    let result = f(conn);
    // Ending a read transaction only releases its snapshot.
    if let Err(e) = conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
    {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.into());
    }
    result
}

/// Runs `f` inside a savepoint, so a failing job undoes only its own changes. The three
/// statements are prepared once per connection: this runs for every write.
fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match f(conn) {
        Ok(value) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(e) => {
            conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one() {
        let m = migrations().unwrap();
        assert_eq!(m[0].0, 1);
        for (i, (v, _)) in m.iter().enumerate() {
            assert_eq!(*v, i as i64 + 1);
        }
    }

    #[test]
    fn migrate_sets_user_version_and_is_idempotent() {
        let mut conn = open_memory_for_tests();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, migrations().unwrap().len() as i64);
        migrate(&mut conn).unwrap();
    }

    /// A new account named `name`, for the tests that write rows directly.
    fn new_user(name: &str) -> users::NewUser {
        users::NewUser {
            username: crate::account::Username::parse(name).unwrap(),
            password_hash: "h".into(),
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
        }
    }

    /// The merge over a user's rooms gives every message changed after the cursor once, in
    /// the order of the changes, page by page, whatever the interleaving; rooms the user is not
    /// in are not in it.
    #[test]
    fn replay_across_rooms_is_one_ordered_merge() {
        use crate::model::{MessageId, Seq};
        let conn = open_memory_for_tests();
        let a = users::insert(&conn, &new_user("a"), 0).unwrap().unwrap();
        let b = users::insert(&conn, &new_user("b"), 0).unwrap().unwrap();
        let c = users::insert(&conn, &new_user("c"), 0).unwrap().unwrap();
        let room = |id: &str, members: &[crate::model::UserId]| {
            let new = rooms::NewRoom {
                public_id: id,
                name: Some(id),
                creator: members[0],
                members,
            };
            rooms::insert(&conn, &new, 1).unwrap()
        };
        let mine = [
            room("r1", &[a.id, b.id]),
            room("r2", &[a.id, b.id]),
            room("r3", &[b.id, a.id]),
        ];
        let other = room("r4", &[c.id, b.id]);
        let mut expected = Vec::new();
        // Runs of different lengths in each room, so pages cut through runs and rooms.
        for i in 0..97u32 {
            let target = if i % 11 == 0 {
                &other
            } else {
                &mine[(i as usize * 7 / 5) % 3]
            };
            let (m, _) =
                messages::insert_text(&conn, target, &b, &format!("m{i}"), None, None, 2).unwrap();
            if target.id != other.id {
                expected.push((m.seq, m.id));
            }
        }
        // Edits, deletions and reactions each take a later position; each is replayed at it.
        let changed: Vec<MessageId> = expected.iter().step_by(5).map(|(_, id)| *id).collect();
        for (k, id) in changed.iter().enumerate() {
            let c = match k % 3 {
                0 => edits::delete(&conn, *id, b.id, 3).unwrap(),
                1 => edits::edit(&conn, *id, b.id, "edited", 3).unwrap(),
                _ => edits::react(&conn, *id, a.id, "\u{1F44D}", true, 3).unwrap(),
            };
            assert!(c.changed);
            assert!(c.message.seq.0 > id.0, "a change takes a later position");
            expected.push((c.message.seq, *id));
        }
        // One more change to a message changed before: it is replayed at both positions.
        let again = edits::edit(&conn, changed[1], b.id, "again", 4).unwrap();
        expected.push((again.message.seq, changed[1]));
        expected.sort();
        let positions: Vec<Seq> = expected.iter().map(|(seq, _)| *seq).collect();
        for limit in [1, 7, 50, 200] {
            let mut seen = Vec::new();
            let mut after = Seq(0);
            loop {
                let (page, more) = replay::changes_for_user(&conn, a.id, after, limit).unwrap();
                assert!(page.len() <= limit as usize);
                for r in &page {
                    // Each shows the message as it is now.
                    assert_eq!(r.message.seq, r.seq);
                    assert_eq!(r.created, r.seq.0 == r.message.id.0);
                    if r.message.id == changed[1] {
                        assert_eq!(r.message.content, "again");
                    }
                }
                seen.extend(page.iter().map(|r| r.seq));
                match page.last() {
                    Some(last) if more => after = last.seq,
                    _ => break,
                }
            }
            assert_eq!(seen, positions, "pages of {limit}");
        }
        let (page, more) = replay::changes_for_user(&conn, a.id, positions[40], 10).unwrap();
        assert_eq!(
            page.iter().map(|r| r.seq).collect::<Vec<_>>(),
            positions[41..51]
        );
        assert!(more);
    }

    static TRACED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    fn record(event: rusqlite::trace::TraceEvent<'_>) {
        if let rusqlite::trace::TraceEvent::Stmt(_, sql) = event {
            TRACED.lock().unwrap().push(sql.to_string());
        }
    }

    /// Runs every hot store function with statement tracing on, then asks SQLite for the plan
    /// of each statement it ran: none may scan a whole table.
    #[test]
    fn hot_queries_use_indexes() {
        use crate::model::{MessageId, Seq};
        use crate::store::messages::Page;
        let conn = open_memory_for_tests();
        let a = users::insert(&conn, &new_user("a"), 0).unwrap().unwrap();
        let b = users::insert(&conn, &new_user("b"), 0).unwrap().unwrap();
        // Enough rows that the planner's choices are the real ones.
        for i in 0..200 {
            users::insert(&conn, &new_user(&format!("u{i}")), 0)
                .unwrap()
                .unwrap();
        }
        let members = [a.id, b.id];
        let new_room = rooms::NewRoom {
            public_id: "room",
            name: None,
            creator: a.id,
            members: &members,
        };
        conn.execute_batch("ANALYZE").unwrap();

        conn.trace_v2(
            rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
            Some(record),
        );
        TRACED.lock().unwrap().clear();
        let room = rooms::insert(&conn, &new_room, 1).unwrap();
        let (m, _) = messages::insert_text(&conn, &room, &a, "hi", Some("c"), None, 2).unwrap();
        messages::insert_text(&conn, &room, &a, "hi", Some("c"), None, 3).unwrap();
        messages::insert_text(&conn, &room, &a, "re", None, Some(m.id), 3).unwrap();
        messages::reactions(&conn, m.id).unwrap();
        messages::set_mentions(&conn, &room, m.id, "hi @b").unwrap();
        lookups::mentions_of(&conn, b.id, None, 50).unwrap();
        lookups::search(&conn, b.id, "\"hi\"", None, None, 50).unwrap();
        lookups::search(&conn, b.id, "\"hi\"*", Some("room"), Some(m.id), 50).unwrap();
        lookups::mentions_of(&conn, b.id, Some(m.id), 50).unwrap();
        messages::page(&conn, &room, Page::Before(None), 50).unwrap();
        messages::page(&conn, &room, Page::Before(Some(m.id)), 50).unwrap();
        messages::page(&conn, &room, Page::After(MessageId(0)), 50).unwrap();
        messages::mark_read(&conn, m.id, b.id).unwrap();
        messages::last_id(&conn, room.id).unwrap();
        messages::last_seq(&conn, room.id).unwrap();
        rooms::for_member(&conn, "room", b.id).unwrap();
        rooms::find_direct(&conn, a.id, b.id).unwrap();
        rooms::page_for(&conn, b.id, None, 50).unwrap();
        let cursor = rooms::RoomCursor {
            activity: 1,
            public_id: "room".into(),
        };
        rooms::page_for(&conn, b.id, Some(&cursor), 50).unwrap();
        rooms::info(&conn, room.id).unwrap();
        rooms::is_member(&conn, room.id, b.id).unwrap();
        let c = users::insert(&conn, &new_user("c"), 0).unwrap().unwrap();
        rooms::add_member(&conn, room.id, c.id, a.id, 4).unwrap();
        rooms::joining(&conn, c.id, a.id).unwrap();
        rooms::count_for(&conn, c.id).unwrap();
        rooms::remove_member(&conn, room.id, c.id).unwrap();
        replay::changes_for_user(&conn, b.id, Seq(0), 50).unwrap();
        replay::changes(&conn, &room, Seq(0), 50).unwrap();
        edits::edit(&conn, m.id, a.id, "hello", 5).unwrap();
        edits::delete(&conn, m.id, a.id, 6).unwrap();
        messages::next_seq(&conn).unwrap();
        users::credentials(&conn, "a").unwrap();
        users::existing(&conn, &members).unwrap();
        let token = tokens::insert(&conn, a.id, b"digest", 0, 10).unwrap();
        tokens::authenticate(&conn, b"digest", 5).unwrap();
        tokens::delete(&conn, token).unwrap();
        tokens::list_for(&conn, a.id, 5).unwrap();
        tokens::delete_for(&conn, a.id, token).unwrap();
        tokens::delete_expired_for(&conn, a.id, 5).unwrap();
        tokens::delete_all_for(&conn, a.id).unwrap();
        conn.trace_v2(rusqlite::trace::TraceEventCodes::empty(), None);

        let statements = std::mem::take(&mut *TRACED.lock().unwrap());
        assert!(statements.len() > 15, "tracing recorded {statements:?}");
        for sql in statements {
            // A trigger firing is traced as a comment naming it; FTS5 reads its own small
            // shadow tables (`messages_fts_*`) whole.
            if sql.trim_start().starts_with("--") || sql.contains("'messages_fts_") {
                continue;
            }
            if !sql.trim_start().to_uppercase().starts_with("SELECT")
                && !sql.to_uppercase().contains("WHERE")
            {
                continue;
            }
            let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let details: Vec<String> = plan
                .query_map(
                    rusqlite::params_from_iter(vec![rusqlite::types::Null; plan.parameter_count()]),
                    |r| r.get::<_, String>(3),
                )
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            for step in &details {
                // A SELECT without FROM "scans" its one constant row, and a full-text MATCH
                // "scans" the matches its index finds.
                let fine = step == "SCAN CONSTANT ROW" || step.contains("VIRTUAL TABLE INDEX");
                assert!(
                    !step.starts_with("SCAN ") || fine,
                    "full scan in {sql}: {details:?}"
                );
            }
        }
    }

    /// Commits one user row of about a page, `n` times, each in its own transaction.
    async fn write_pages(store: &Store, from: usize, n: usize) {
        for i in from..from + n {
            store
                .write(move |c| {
                    c.execute(
                        "INSERT INTO users (username, username_key, password_hash, date_joined) \
                         VALUES (?1, ?1, ?2, 0)",
                        rusqlite::params![format!("u{i}"), "x".repeat(3000)],
                    )?;
                    Ok(())
                })
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_writer_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let store = Store::open(path.to_str().unwrap(), 2).unwrap();
        let mut progress = store
            .checkpoints()
            .expect("a file database has a checkpointer");
        assert_eq!(progress.borrow().runs, 0);

        // Past the wake-up threshold: the checkpointer thread copies the WAL.
        write_pages(&store, 0, checkpoint::WAKE_PAGES as usize).await;
        let done = tokio::time::timeout(
            Duration::from_secs(30),
            progress.wait_for(|p| p.runs > 0 && p.copied > 0),
        )
        .await
        .expect("the checkpointer ran")
        .unwrap()
        .to_owned();
        assert!(done.copied <= done.log, "{done:?}");

        // Sustained writes of three times the writer's threshold: the checkpointer is always a
        // few commits behind, so the writer finishes a checkpoint itself now and then, and the
        // WAL starts over instead of growing with the writes.
        let by_writer = crate::metrics::METRICS.writer_checkpoints.get();
        write_pages(&store, 10_000, 3 * checkpoint::WRITER_PAGES as usize).await;
        assert!(crate::metrics::METRICS.writer_checkpoints.get() > by_writer);
        let wal = std::fs::metadata(dir.path().join("chat.db-wal"))
            .unwrap()
            .len();
        let frame = 4096 + 24;
        assert!(
            wal <= (2 * checkpoint::WRITER_PAGES as u64 + 100) * frame,
            "WAL of {wal} bytes"
        );
        let users: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(
            users,
            (checkpoint::WAKE_PAGES + 3 * checkpoint::WRITER_PAGES) as i64
        );
        store.close().await.unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("chat.db-wal"))
                .unwrap()
                .len(),
            0
        );
    }

    /// A burst commits far more than a steady load needs; once it is checkpointed, the next
    /// transaction starts the WAL over and the file shrinks back to the limit.
    #[tokio::test]
    async fn the_wal_shrinks_back_after_a_burst() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let store = Store::open(path.to_str().unwrap(), 2).unwrap();
        let mut progress = store.checkpoints().unwrap();
        let wal_len = || {
            std::fs::metadata(dir.path().join("chat.db-wal"))
                .unwrap()
                .len()
        };
        let burst = 3 * checkpoint::WAKE_PAGES as usize;
        store
            .write(move |c| {
                let mut insert = c.prepare(
                    "INSERT INTO users (username, username_key, password_hash, date_joined) \
                     VALUES (?1, ?1, ?2, 0)",
                )?;
                for i in 0..burst {
                    insert.execute(rusqlite::params![format!("b{i}"), "x".repeat(3000)])?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let after_burst = wal_len();
        assert!(after_burst > 2 * JOURNAL_SIZE_LIMIT as u64, "{after_burst}");
        tokio::time::timeout(
            Duration::from_secs(30),
            progress.wait_for(|p| p.log >= burst as i64 && p.copied == p.log),
        )
        .await
        .expect("the checkpointer copied the burst")
        .unwrap();
        write_pages(&store, 0, 1).await;
        let after = wal_len();
        assert!(
            after <= JOURNAL_SIZE_LIMIT as u64,
            "a WAL of {after} bytes after a burst of {after_burst}"
        );
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_rolls_back_only_itself() {
        let store = Store::open(":memory:", 2).unwrap();
        let ok = store.write(|c| {
            c.execute(
                "INSERT INTO users (username, username_key, password_hash, date_joined) VALUES ('a','a','x',0)",
                [],
            )?;
            Ok(())
        });
        let bad = store.write(|c| {
            c.execute(
                "INSERT INTO users (username, username_key, password_hash, date_joined) VALUES ('b','b','x',0)",
                [],
            )?;
            c.execute("INSERT INTO nope VALUES (1)", [])?;
            Ok(())
        });
        let (ok, bad) = tokio::join!(ok, bad);
        ok.unwrap();
        assert!(bad.is_err());
        let names: Vec<String> = store
            .read(|c| {
                let mut s = c.prepare("SELECT username FROM users ORDER BY id")?;
                let rows = s.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
            .unwrap();
        assert_eq!(names, vec!["a".to_string()]);
    }
}

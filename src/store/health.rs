//! What keeps the store answering when its machine does not: bounded queues in front of the
//! reader threads and the writer, and the writer's account of storage faults (a full disk, an
//! I/O error), told once per episode.
//!
//! A queue past its bound refuses at once with [`StoreError::Overloaded`]: a request that
//! would wait longer than the queue takes to drain is better answered 503 now than late. A
//! write that fails for the storage fails with an error that [`StoreError::is_storage_fault`]
//! recognises; the writer then counts the store as failing until a transaction commits again,
//! and while it fails it probes every [`PROBE_EVERY`] with a small committed write, so it
//! recovers by itself when space returns, with or without traffic.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

use super::{Result, StoreError};
use crate::metrics::METRICS;

/// How often the writer tries a write of its own while the storage is failing.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Bytes the probe commits (and deletes in the same transaction): a few pages of growth.
const PROBE_BYTES: i64 = 64 * 1024;

/// A count of jobs waiting for a thread, refused past its bound.
pub(crate) struct Queue {
    queued: AtomicUsize,
    bound: usize,
}

impl Queue {
    pub(crate) fn new(bound: usize) -> Queue {
        Queue {
            queued: AtomicUsize::new(0),
            bound: bound.max(1),
        }
    }

    /// Takes a place in the queue, or refuses if it is full.
    pub(crate) fn enter(&self) -> Result<()> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.bound {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Overloaded);
        }
        Ok(())
    }

    /// A job left the queue (a thread took it, or it was never sent).
    pub(crate) fn leave(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

impl StoreError {
    /// The storage under the database failed the write: the disk (or the database's size
    /// limit) is full, the file system refuses to write, or an I/O error. Not the request's
    /// fault, and it passes when the storage recovers.
    pub fn is_storage_fault(&self) -> bool {
        match self {
            StoreError::StorageFull(_) => true,
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::ReadOnly)
            ),
            _ => false,
        }
    }
}

/// Whether the writer can commit, and the episode it cannot.
#[derive(Default)]
pub(crate) struct Storage {
    failing: AtomicBool,
    episode: Mutex<Option<Episode>>,
}

struct Episode {
    since: Instant,
    refused: u64,
}

impl Storage {
    /// Whether the writer cannot commit now.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// A batch of `jobs` writes failed for the storage with `error`: the first failure of an
    /// episode is logged, later ones are counted.
    pub(crate) fn failed(&self, error: &StoreError, jobs: usize) {
        let mut episode = self.episode.lock().unwrap_or_else(|e| e.into_inner());
        match episode.as_mut() {
            Some(episode) => episode.refused += jobs as u64,
            None => {
                tracing::error!(
                    error = %error,
                    "the database cannot store writes (disk full or failing); writes are answered \
                     503 storage_full and /healthz 503 until a write commits again"
                );
                METRICS.storage_fault_episodes.inc();
                *episode = Some(Episode {
                    since: Instant::now(),
                    refused: jobs as u64,
                });
                self.failing.store(true, Ordering::Relaxed);
            }
        }
    }

    /// A transaction with changes committed: the episode, if any, is over.
    pub(crate) fn committed(&self) {
        if !self.is_failing() {
            return;
        }
        let mut episode = self.episode.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ended) = episode.take() {
            tracing::warn!(
                after_secs = ended.since.elapsed().as_secs(),
                writes_refused = ended.refused,
                "the database stores writes again"
            );
        }
        self.failing.store(false, Ordering::Relaxed);
    }

    /// While failing: commits a small write of its own, and ends the episode if it commits.
    pub(crate) fn probe(&self, conn: &Connection) {
        if !self.is_failing() {
            return;
        }
        match write_probe(conn) {
            Ok(()) => self.committed(),
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                // Once a second while the episode lasts: the episode's own lines say what
                // matters; this is for whoever looks closer.
                if !e.is_storage_fault() {
                    tracing::debug!(error = %e, "storage probe failed");
                }
            }
        }
    }
}

/// Grows the database by [`PROBE_BYTES`] and shrinks it back, in one committed transaction.
fn write_probe(conn: &Connection) -> Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    conn.prepare_cached("INSERT INTO storage_probe (bytes) VALUES (zeroblob(?1))")?
        .execute([PROBE_BYTES])?;
    conn.prepare_cached("DELETE FROM storage_probe")?
        .execute([])?;
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(())
}

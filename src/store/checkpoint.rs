//! WAL checkpoints off the write path.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages:
//! that commit copies the WAL into the database file and syncs both before it returns, and
//! every write queued behind it waits. Instead, the writer connection reports the WAL's size
//! after each commit (SQLite's WAL hook, which also turns the automatic checkpoint off) and
//! wakes a checkpointer thread with a connection of its own, which copies committed pages into
//! the database file while the writer goes on committing.
//!
//! SQLite starts the WAL over from its beginning only when a write transaction begins after
//! every frame was copied. Under sustained writes the checkpointer is always a few commits
//! behind, so the WAL would keep growing. Once it passes [`WRITER_PAGES`], the writer stops
//! waking the checkpointer and copies the rest itself as soon as the checkpointer is not in the
//! middle of a run (by then a few hundred pages, the checkpointer having done the bulk); past
//! twice that it waits for the run to end. The next transaction starts the WAL over.

use std::cell::Cell;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::Connection;
use rusqlite::hooks::Wal;
use tokio::sync::watch;

use super::{Result, StoreError};
use crate::metrics::METRICS;

/// WAL size, in pages, at which the checkpointer is woken (SQLite's automatic checkpoint
/// threshold).
pub const WAKE_PAGES: i32 = 1000;
/// WAL size at which the writer finishes the checkpoint itself: 32 MiB of 4 KiB pages. The
/// WAL stays under twice this.
pub const WRITER_PAGES: i32 = 8 * WAKE_PAGES;

/// What the last checkpoint did, in WAL frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Checkpoints run by the checkpointer thread so far.
    pub runs: u64,
    /// Frames in the WAL when the last one ran.
    pub log: i64,
    /// Frames of those that are now in the database file.
    pub copied: i64,
}

thread_local! {
    /// Pages in the WAL after the last commit on this thread (set by the WAL hook, which
    /// SQLite calls on the committing thread).
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

fn record_wal_pages(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

/// Runs a passive checkpoint: copies what it can without waiting for anyone. `None` if the
/// other side was checkpointing, so this one did nothing.
fn passive(conn: &Connection) -> Result<Option<(i64, i64)>> {
    let (busy, log, copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok((busy == 0).then_some((log, copied)))
}

/// The writer's side: decides after each commit who checkpoints, if anyone.
pub struct Checkpointer {
    wake: Option<mpsc::SyncSender<()>>,
    /// Set at shutdown, so a wake-up still queued does not start another checkpoint.
    stop: Arc<AtomicBool>,
    /// Held by whoever is checkpointing, so the writer knows whether the checkpointer is in
    /// the middle of a run.
    running: Arc<Mutex<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the checkpointer thread on its own connection `conn` to the database that
    /// `writer` writes, and takes over checkpointing from `writer`'s commits. Returns the
    /// handle the writer keeps, and a receiver of the checkpointer's progress.
    pub fn start(
        writer: &Connection,
        conn: Connection,
    ) -> Result<(Checkpointer, watch::Receiver<Progress>)> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let running = Arc::new(Mutex::new(()));
        let lock = running.clone();
        let (progress, watcher) = watch::channel(Progress::default());
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() && !stopping.load(Ordering::Relaxed) {
                    let _running = lock.lock().unwrap_or_else(|e| e.into_inner());
                    let started = Instant::now();
                    match passive(&conn) {
                        Ok(None) => {}
                        Ok(Some((log, copied))) => {
                            METRICS.checkpoint_latency.observe(started.elapsed());
                            progress.send_modify(|p| {
                                *p = Progress {
                                    runs: p.runs + 1,
                                    log,
                                    copied,
                                }
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                    }
                }
            })
            .map_err(|e| StoreError::Other(format!("cannot start checkpoint thread: {e}")))?;
        writer.wal_hook(Some(record_wal_pages));
        Ok((
            Checkpointer {
                wake: Some(wake),
                stop,
                running,
                thread: Some(thread),
            },
            watcher,
        ))
    }

    /// Called by the writer thread after each commit on `writer`.
    pub fn after_commit(&self, writer: &Connection) {
        let pages = WAL_PAGES.replace(0);
        if pages >= WRITER_PAGES {
            // No longer woken, the checkpointer is idle within a run or two; the writer waits
            // for it only if the WAL keeps growing regardless.
            let idle = if pages >= 2 * WRITER_PAGES {
                Some(self.running.lock().unwrap_or_else(|e| e.into_inner()))
            } else {
                self.running.try_lock().ok()
            };
            if idle.is_none() {
                return;
            }
            let started = Instant::now();
            match passive(writer) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    METRICS.writer_checkpoints.inc();
                    METRICS.checkpoint_latency.observe(started.elapsed());
                }
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        } else if pages >= WAKE_PAGES
            && let Some(wake) = &self.wake
        {
            // A full channel means a wake-up is already pending.
            let _ = wake.try_send(());
        }
    }

    /// Stops the checkpointer thread once its current checkpoint, if any, is done.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

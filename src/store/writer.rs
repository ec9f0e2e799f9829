//! The writer thread: the only write connection, running whatever is queued in one
//! transaction (group commit), answering each job once its transaction committed, and telling
//! the storage's health (see `health`) what the commits found.

use std::sync::{Arc, mpsc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::health::{self, Queue, Storage};
use super::{Command, Completion, Job, MAX_BATCH, Result, StoreError, preflight, search_index};

/// The writer thread's side: the only write connection, and what it reports to.
pub(super) struct Writer {
    /// This server's claim on the database file, held until the writer stops.
    pub(super) lock: Option<preflight::ServerLock>,
    pub(super) conn: Connection,
    pub(super) checkpointer: Option<Checkpointer>,
    pub(super) queue: Arc<Queue>,
    pub(super) storage: Arc<Storage>,
}

/// A batch's jobs, run in one transaction.
struct Batch {
    completions: Vec<Completion>,
    /// The first error of a job that the storage failed.
    fault: Option<StoreError>,
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut batch = Batch {
            completions: Vec::with_capacity(MAX_BATCH),
            fault: None,
        };
        let mut closing = None;
        loop {
            // While the storage fails, a probe now and then finds out when it is back.
            let command = if self.storage.is_failing() {
                match rx.recv_timeout(health::PROBE_EVERY) {
                    Ok(command) => command,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.storage.probe(&self.conn);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                }
            };
            let first = match command {
                Command::Write(job) => job,
                Command::Close(reply) => {
                    closing = Some(reply);
                    break;
                }
            };
            if let Err(reply) = self.commit_batch(first, &rx, &mut batch) {
                closing = Some(reply);
                break;
            }
        }
        if let Some(reply) = closing {
            // Nothing can be queued behind us any more: refuse later writes.
            drop(rx);
            if let Some(checkpointer) = &mut self.checkpointer {
                checkpointer.stop();
            }
            let checkpointed = checkpoint(&self.conn);
            // Whoever waits for the close may open the database again at once.
            drop(self.lock.take());
            let _ = reply.send(checkpointed);
        }
        tracing::debug!("database writer stopped");
    }

    /// Runs `first` and whatever is queued behind it (up to [`MAX_BATCH`] jobs) in one
    /// transaction, commits it and answers every job. A `Close` met in the queue is returned
    /// after the batch committed.
    fn commit_batch(
        &mut self,
        first: Job,
        rx: &mpsc::Receiver<Command>,
        batch: &mut Batch,
    ) -> std::result::Result<(), oneshot::Sender<Result<()>>> {
        let conn = &self.conn;
        let started = std::time::Instant::now();
        let changes_before = conn.total_changes();
        let mut closing = None;
        let began = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]));
        if let Err(e) = began {
            let err = StoreError::from(e);
            // Fail this job, unrun, and retry with the next one.
            self.queue.leave();
            let (done, _) = first(None);
            self.fail(&err, 1);
            done(Err(err));
            return Ok(());
        }
        self.run_job(first, batch);
        // A storage failure may have rolled the whole transaction back: nothing more joins it.
        while batch.completions.len() < MAX_BATCH && !conn.is_autocommit() {
            match rx.try_recv() {
                Ok(Command::Write(job)) => self.run_job(job, batch),
                Ok(Command::Close(reply)) => {
                    closing = Some(reply);
                    break;
                }
                Err(_) => break,
            }
        }
        let committed = match batch.fault.take() {
            Some(fault) if conn.is_autocommit() => Err(fault),
            fault => {
                // The batch's changes of message text reach the full-text index in its
                // transaction.
                let committed = search_index::apply_queue(conn).and_then(|_| {
                    conn.prepare_cached("COMMIT")
                        .and_then(|mut s| s.execute([]))
                        .map(drop)
                        .map_err(StoreError::from)
                });
                match (&committed, fault) {
                    (Ok(()), Some(fault)) => self.fail(&fault, 1),
                    // A commit that changed nothing writes nothing, and proves nothing.
                    (Ok(()), None) if conn.total_changes() > changes_before => {
                        self.storage.committed()
                    }
                    _ => {}
                }
                committed
            }
        };
        if let Err(e) = &committed {
            if e.is_storage_fault() {
                self.fail(e, batch.completions.len());
            } else {
                tracing::error!(error = %e, "commit failed");
            }
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        crate::metrics::METRICS
            .write_batch_latency
            .observe(started.elapsed());
        crate::metrics::METRICS
            .write_batch_jobs
            .add(batch.completions.len() as u64);
        for done in batch.completions.drain(..) {
            done(committed.clone());
        }
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.after_commit(conn);
        }
        closing.map_or(Ok(()), Err)
    }

    fn run_job(&self, job: Job, batch: &mut Batch) {
        self.queue.leave();
        let (done, fault) = job(Some(&self.conn));
        batch.completions.push(done);
        if batch.fault.is_none() {
            batch.fault = fault;
        }
    }

    /// `jobs` writes failed for the storage (or for another reason, which is logged).
    fn fail(&self, error: &StoreError, jobs: usize) {
        if error.is_storage_fault() {
            self.storage.failed(error, jobs);
        } else {
            tracing::error!(error = %error, "cannot begin write transaction");
        }
    }
}

/// Moves the WAL's content into the database file and truncates the WAL, so the file alone
/// is a complete copy of the database.
fn checkpoint(conn: &Connection) -> Result<()> {
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    if busy != 0 {
        return Err(StoreError::Other(format!(
            "WAL checkpoint incomplete: {done} of {log} frames (a reader held the database)"
        )));
    }
    Ok(())
}

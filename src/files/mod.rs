//! The bytes of uploaded files: a directory (`--files`, by default `<db>.files/`) of files
//! named by their SHA-256, so the same bytes are stored once however often they are uploaded.
//!
//! ```text
//! <files>/objects/ab/ab12…ef   the bytes of every upload and thumbnail
//! <files>/tmp/                 uploads being received (emptied at startup)
//! <files>/sweep.lock           held shared by `chat-server backup` while it copies
//! ```
//!
//! An upload streams into `tmp/` while it is hashed, is synced, and is renamed into
//! `objects/` before the row that names it commits ([`Files::commit`]). A crash before the
//! rename leaves a temporary file, removed at the next start; after it, a file no row names,
//! which the sweeper removes. The sweeper ([`Files::sweep`]) removes files no row names under
//! the same lock as a commit, so it never removes a file a commit is about to name.

pub mod sniff;
pub mod thumbs;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::model::UserId;

/// The writes an upload is received in.
const WRITE_BYTES: usize = 64 * 1024;

/// How much of an upload's start is kept for telling its type.
pub const HEAD_BYTES: usize = 16 * 1024;

/// The files directory and what guards it.
pub struct Files {
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    /// For `:memory:`: the directory itself, removed when the server ends.
    _temporary: Option<tempfile::TempDir>,
    /// Held while files are put in place and their row commits, and while the sweeper
    /// decides what to remove.
    commit: tokio::sync::Mutex<()>,
    /// Uploads being received, per user.
    running: Mutex<HashMap<UserId, u32>>,
    /// Images decoded at once (decoding takes a core and up to [`thumbs::MAX_ALLOC`]).
    pub decoding: tokio::sync::Semaphore,
    /// Wakes the sweeper early (a message with files was deleted).
    pub sweep_soon: tokio::sync::Notify,
    /// Paces what all uploads together take in, so that they leave CPU for everything else.
    pace: Option<Pace>,
}

/// A shared byte rate: each chunk received books its share of the time after the ones before
/// it, with a little slack for bursts; a receiver ahead of the rate waits, and TCP tells the
/// sender to slow down.
struct Pace {
    secs_per_byte: f64,
    next: Mutex<std::time::Instant>,
}

/// How far ahead of the rate the uploads together may run.
const PACE_BURST: std::time::Duration = std::time::Duration::from_millis(50);

impl Pace {
    /// How long to wait before taking `n` more bytes.
    fn book(&self, n: usize) -> std::time::Duration {
        self.book_at(n, std::time::Instant::now())
    }

    /// [`Pace::book`] at the time `now`.
    fn book_at(&self, n: usize, now: std::time::Instant) -> std::time::Duration {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = now.checked_sub(PACE_BURST).unwrap_or(now);
        let start = (*next).max(earliest);
        *next = start + std::time::Duration::from_secs_f64(n as f64 * self.secs_per_byte);
        next.saturating_duration_since(now + PACE_BURST)
    }
}

/// Where the bytes named `sha256` live under `objects`.
pub fn object_in(objects: &Path, sha256: &str) -> PathBuf {
    objects.join(&sha256[..2.min(sha256.len())]).join(sha256)
}

/// An upload received into a temporary file: removed when dropped unless committed.
pub struct Received {
    pub temp: tempfile::TempPath,
    pub sha256: String,
    pub size: u64,
    /// The first [`HEAD_BYTES`], for telling the type.
    pub head: Vec<u8>,
}

/// Why receiving an upload stopped.
#[derive(Debug)]
pub enum ReceiveError {
    /// More than the limit arrived.
    TooLarge,
    /// The body broke off or was malformed.
    Body(String),
    /// The disk would not take it.
    Storage(io::Error),
}

/// A running upload, counted against its user's `uploads_at_once_per_user` until dropped.
pub struct Running<'a> {
    files: &'a Files,
    user: UserId,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.files.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.user);
            }
        }
    }
}

impl Files {
    /// Opens (creating) the files directory `dir` (`None`: a temporary one, removed when the
    /// server ends; see `ServerConfig::files_dir`), and empties its `tmp/`: whatever is
    /// there is an upload a stopped server never finished. Uploads together take in at most
    /// `bytes_per_sec` (0: as fast as they come).
    pub fn open(dir: Option<PathBuf>, bytes_per_sec: u64) -> io::Result<Files> {
        let (root, temporary) = match dir {
            Some(dir) => (dir, None),
            None => {
                let dir = tempfile::Builder::new().prefix("chat-files-").tempdir()?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        fs::create_dir_all(&objects)?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Files {
            root,
            objects,
            tmp,
            _temporary: temporary,
            commit: tokio::sync::Mutex::new(()),
            running: Mutex::new(HashMap::new()),
            decoding: tokio::sync::Semaphore::new((cores / 2).max(1)),
            sweep_soon: tokio::sync::Notify::new(),
            pace: (bytes_per_sec > 0).then(|| Pace {
                secs_per_byte: 1.0 / bytes_per_sec as f64,
                next: Mutex::new(std::time::Instant::now()),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the bytes named `sha256` live.
    pub fn object(&self, sha256: &str) -> PathBuf {
        object_in(&self.objects, sha256)
    }

    /// Counts an upload of `user`'s as running; `None` if they have `most` running already.
    pub fn start(&self, user: UserId, most: u32) -> Option<Running<'_>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let n = running.entry(user).or_insert(0);
        if *n >= most {
            return None;
        }
        *n += 1;
        Some(Running { files: self, user })
    }

    /// A new temporary file to receive into.
    pub fn temp(&self) -> io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&self.tmp)
    }

    /// Receives `body` into a temporary file, hashing it, at most `limit` bytes; synced
    /// before it returns.
    pub async fn receive<S, E>(&self, body: S, limit: u64) -> Result<Received, ReceiveError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;

        let (file, temp) = self.temp().map_err(ReceiveError::Storage)?.into_parts();
        let mut out =
            tokio::io::BufWriter::with_capacity(WRITE_BYTES, tokio::fs::File::from_std(file));
        let mut hash = Sha256::new();
        let mut head = Vec::new();
        let mut size: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ReceiveError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(ReceiveError::TooLarge);
            }
            if head.len() < HEAD_BYTES {
                let take = (HEAD_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            hash.update(&chunk);
            out.write_all(&chunk).await.map_err(ReceiveError::Storage)?;
            let wait = self.pace.as_ref().map(|p| p.book(chunk.len()));
            if let Some(wait) = wait.filter(|w| !w.is_zero()) {
                tokio::time::sleep(wait).await;
            }
        }
        out.flush().await.map_err(ReceiveError::Storage)?;
        out.into_inner()
            .sync_all()
            .await
            .map_err(ReceiveError::Storage)?;
        Ok(Received {
            temp,
            sha256: hex::encode(hash.finalize()),
            size,
            head,
        })
    }

    /// Writes `bytes` (a thumbnail) to a synced temporary file; its SHA-256 and the file.
    pub fn write_temp(&self, bytes: &[u8]) -> io::Result<(String, tempfile::TempPath)> {
        let mut file = self.temp()?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        Ok((hex::encode(Sha256::digest(bytes)), file.into_temp_path()))
    }

    /// Holds off the sweeper while files are put in place and the row naming them commits.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.commit.lock().await
    }

    /// Puts the synced temporary file `temp` in place as the bytes named `sha256` (if they are
    /// there already, `temp` is dropped), and syncs the directory. Call it holding
    /// [`Files::lock`], before the row naming it commits.
    pub fn commit(&self, temp: tempfile::TempPath, sha256: &str) -> io::Result<()> {
        let path = self.object(sha256);
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.objects);
        fs::create_dir_all(dir)?;
        temp.persist(&path).map_err(|e| e.error)?;
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Removes every file none of `referenced` names; what it removed (files, bytes). Call it
    /// holding [`Files::lock`], with `referenced` read while holding it. Skipped (nothing
    /// removed) while `chat-server backup` holds `sweep.lock`.
    pub fn sweep(&self, referenced: &HashSet<String>) -> io::Result<(u64, u64)> {
        let Some(_held) = SweepLock::exclusive(&self.root)? else {
            return Ok((0, 0));
        };
        let (mut files, mut bytes) = (0, 0);
        for dir in fs::read_dir(&self.objects)? {
            let dir = dir?.path();
            if !dir.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let keep = name.to_str().is_some_and(|n| referenced.contains(n));
                if !keep {
                    let size = entry.metadata().map_or(0, |m| m.len());
                    match fs::remove_file(entry.path()) {
                        Ok(()) => {
                            files += 1;
                            bytes += size;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok((files, bytes))
    }
}

/// `sweep.lock` in a files directory, held with `flock`: shared by a backup that copies the
/// files, exclusive by a sweep that removes some. Released when dropped.
pub struct SweepLock {
    _held: fs::File,
}

impl SweepLock {
    fn open(root: &Path) -> io::Result<fs::File> {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("sweep.lock"))
    }

    /// Waits until no sweep runs, then keeps sweeps from removing anything until dropped.
    pub fn shared(root: &Path) -> io::Result<SweepLock> {
        let file = Self::open(root)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SweepLock { _held: file })
    }

    /// The lock for a sweep, or `None` while a backup holds it.
    fn exclusive(root: &Path) -> io::Result<Option<SweepLock>> {
        let file = Self::open(root)?;
        // SAFETY: as above.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        Ok(Some(SweepLock { _held: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Option<PathBuf> {
        crate::config::ServerConfig {
            db: dir.join("chat.db").to_string_lossy().into_owned(),
            ..crate::config::ServerConfig::default()
        }
        .files_dir()
    }

    #[tokio::test]
    async fn a_received_file_is_named_by_its_hash_and_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(config(dir.path()), 0).unwrap();
        assert_eq!(files.root(), dir.path().join("chat.db.files"));
        let chunks = || {
            futures_util::stream::iter(
                ["hello ", "world"].map(|s| Ok::<_, String>(bytes::Bytes::from(s))),
            )
        };
        let got = files.receive(chunks(), 100).await.unwrap();
        assert_eq!(got.size, 11);
        assert_eq!(got.head, b"hello world");
        let sha = got.sha256.clone();
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello world")));
        let temp_path = got.temp.to_path_buf();
        files.commit(got.temp, &sha).unwrap();
        assert!(!temp_path.exists());
        assert_eq!(fs::read(files.object(&sha)).unwrap(), b"hello world");
        // The same bytes again: the temporary file goes, the stored one stays.
        let again = files.receive(chunks(), 100).await.unwrap();
        let again_path = again.temp.to_path_buf();
        files.commit(again.temp, &sha).unwrap();
        assert!(!again_path.exists());
        assert!(files.object(&sha).exists());
        // Over the limit: refused, and nothing is left in tmp/.
        assert!(matches!(
            files.receive(chunks(), 10).await,
            Err(ReceiveError::TooLarge)
        ));
        assert_eq!(
            fs::read_dir(dir.path().join("chat.db.files/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn the_sweep_keeps_what_is_referenced_and_waits_for_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(config(dir.path()), 0).unwrap();
        let (a, temp) = files.write_temp(b"a").unwrap();
        files.commit(temp, &a).unwrap();
        let (b, temp) = files.write_temp(b"b").unwrap();
        files.commit(temp, &b).unwrap();
        let referenced = HashSet::from([a.clone()]);
        let backup = SweepLock::shared(files.root()).unwrap();
        assert_eq!(files.sweep(&referenced).unwrap(), (0, 0));
        assert!(files.object(&b).exists());
        drop(backup);
        assert_eq!(files.sweep(&referenced).unwrap(), (1, 1));
        assert!(files.object(&a).exists());
        assert!(!files.object(&b).exists());
    }

    #[test]
    fn without_a_directory_the_files_live_in_a_temporary_one_removed_at_the_end() {
        let memory = crate::config::ServerConfig {
            db: ":memory:".into(),
            ..crate::config::ServerConfig::default()
        };
        assert_eq!(memory.files_dir(), None);
        let files = Files::open(memory.files_dir(), 0).unwrap();
        let root = files.root().to_path_buf();
        let (sha, temp) = files.write_temp(b"kept for now").unwrap();
        files.commit(temp, &sha).unwrap();
        assert!(files.object(&sha).exists());
        drop(files);
        assert!(!root.exists(), "{} is left behind", root.display());
    }

    #[test]
    fn a_stopped_servers_partial_uploads_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(config(dir.path()), 0).unwrap();
        let partial = files.temp().unwrap().into_temp_path().keep().unwrap();
        assert!(partial.exists());
        drop(files);
        let _files = Files::open(config(dir.path()), 0).unwrap();
        assert!(!partial.exists());
    }

    #[test]
    fn the_pace_books_each_chunk_after_the_ones_before() {
        use std::time::Duration;
        let t0 = std::time::Instant::now();
        let pace = Pace {
            secs_per_byte: 1.0 / 1_000_000.0,
            next: Mutex::new(t0),
        };
        // 50 ms of slack: the first 50,000 bytes wait for nothing; the next 100,000 bytes
        // wait 100 ms, and the next 100,000 another 100 ms after those.
        assert_eq!(pace.book_at(50_000, t0), Duration::ZERO);
        assert_eq!(pace.book_at(100_000, t0), Duration::from_millis(100));
        assert_eq!(pace.book_at(100_000, t0), Duration::from_millis(200));
        // Time passing pays the debt off; an idle spell earns no more than the slack (50 ms
        // behind now, 50 ms ahead of it).
        let later = t0 + Duration::from_millis(300);
        assert_eq!(pace.book_at(50_000, later), Duration::ZERO);
        let much_later = t0 + Duration::from_secs(10);
        for _ in 0..2 {
            assert_eq!(pace.book_at(50_000, much_later), Duration::ZERO);
        }
        assert_eq!(pace.book_at(50_000, much_later), Duration::from_millis(50));
    }

    #[test]
    fn uploads_at_once_are_counted_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(config(dir.path()), 0).unwrap();
        let one = files.start(UserId(1), 2).unwrap();
        let _two = files.start(UserId(1), 2).unwrap();
        assert!(files.start(UserId(1), 2).is_none());
        assert!(files.start(UserId(2), 2).is_some());
        drop(one);
        assert!(files.start(UserId(1), 2).is_some());
    }
}

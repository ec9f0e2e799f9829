//! What is checked before a server touches its database file, so that a wrong file, a wrong
//! directory or a second server is a clear error at startup and nothing is overwritten.
//!
//! - The directory must take new files: SQLite keeps its `-wal` and `-shm` files beside the
//!   database, and a directory that refuses them fails later with a vaguer message.
//! - One server per database: a server holds an exclusive lock on `<db>.lock` (an advisory
//!   `flock`, released by the kernel whenever the process ends, however it ends) for as long as
//!   it runs. The file is left in place; only the lock matters. The operator's commands (`backup`,
//!   `user ...`) take no lock: they work beside a running server, as SQLite allows.
//! - A file that is not a SQLite database, or one whose schema is newer than this binary knows,
//!   is refused before any migration runs (see [`super::migrate`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::{Result, StoreError};

/// The exclusive lock a running server holds on its database; released when dropped.
#[derive(Debug)]
pub struct ServerLock {
    _file: File,
}

/// The lock file of the database at `db`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

/// Checks that the database at `db` can be served by this process alone, and takes its lock.
pub fn prepare(db: &Path) -> Result<ServerLock> {
    let dir = match db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    check_directory(dir)?;
    if db.is_dir() {
        return Err(StoreError::Startup(format!(
            "{} is a directory, not a database file",
            db.display()
        )));
    }
    let lock = take_lock(db)?;
    if db.exists() {
        // Opened for writing, so a read-only file is refused here and not at the first write.
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(db)
            .map_err(|e| {
                StoreError::Startup(format!("cannot open {} for writing: {e}", db.display()))
            })?;
    }
    Ok(lock)
}

/// The directory exists and a new file can be made in it.
fn check_directory(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(StoreError::Startup(format!(
            "the directory {} does not exist",
            dir.display()
        )));
    }
    let probe = dir.join(format!(".chat-server-probe-{}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(StoreError::Startup(format!(
            "cannot create files in {} ({e}); the database needs its -wal and -shm files \
             beside it, so the directory must be writable by the server",
            dir.display()
        ))),
    }
}

fn take_lock(db: &Path) -> Result<ServerLock> {
    let path = lock_path(db);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::Startup(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another chat-server process".to_string()
            } else {
                format!("another chat-server process (pid {holder})")
            };
            return Err(StoreError::Startup(format!(
                "{} is already served by {who}; stop it first, or give this one another --db",
                db.display()
            )));
        }
        Err(TryLockError::Error(e)) => {
            return Err(StoreError::Startup(format!(
                "cannot lock {}: {e}",
                path.display()
            )));
        }
    }
    // Who holds it, for the message above; the lock, not the text, is what excludes.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(ServerLock { _file: file })
}

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses a non-empty file that does not start like a SQLite database, without writing to it.
pub fn check_header(db: &Path) -> Result<()> {
    let mut file = match File::open(db) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Startup(format!(
                "cannot read {}: {e}",
                db.display()
            )));
        }
    };
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => {
                return Err(StoreError::Startup(format!(
                    "cannot read {}: {e}",
                    db.display()
                )));
            }
        }
    }
    // An empty file is a database not yet written (SQLite makes one of it).
    if read == 0 || &head[..read] == SQLITE_MAGIC.as_slice() {
        return Ok(());
    }
    Err(StoreError::Startup(format!(
        "{} is not a SQLite database (it may be damaged, or another kind of file); it was left \
         unchanged. Restore it from a backup (see README, Backups) or give another --db",
        db.display()
    )))
}

/// Reads the schema of an existing database without writing to it: refuses a file SQLite
/// cannot read as a database, and one whose schema is newer than `known` (the last migration
/// this binary has).
pub fn check_schema(db: &Path, known: i64) -> Result<()> {
    if std::fs::metadata(db).map(|m| m.len()).unwrap_or(0) == 0 {
        return Ok(());
    }
    let damaged = |e: rusqlite::Error| {
        StoreError::Startup(format!(
            "cannot read {} as a database ({e}); it was left unchanged. Restore it from a \
             backup (see README, Backups) or give another --db",
            db.display()
        ))
    };
    check_length(db)?;
    // Without a WAL to read, immutable: SQLite then creates no `-shm` or `-wal` beside it.
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
        | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let uri = if has_wal(db) {
        format!("file:{}", uri_path(db))
    } else {
        format!("file:{}?immutable=1", uri_path(db))
    };
    let conn = rusqlite::Connection::open_with_flags(uri, flags).map_err(damaged)?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(damaged)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(damaged)?;
    newer_than_known(db, version, known)
}

/// Refuses a schema newer than this binary's: it was written by a later release, whose
/// tables this one would misread.
pub fn newer_than_known(db: &Path, version: i64, known: i64) -> Result<()> {
    if version > known {
        return Err(StoreError::Startup(format!(
            "{} has schema version {version}, newer than this chat-server's {known}: it was \
             written by a later release. Run that release (or a newer one); this one changes \
             nothing",
            db.display()
        )));
    }
    Ok(())
}

/// Refuses a database file shorter than its header says, unless a WAL beside it may hold the
/// rest (a checkpoint cut short by a crash, which SQLite finishes from the WAL).
fn check_length(db: &Path) -> Result<()> {
    if has_wal(db) {
        return Ok(());
    }
    let mut header = [0u8; 100];
    let len = match File::open(db).and_then(|mut f| {
        f.read_exact(&mut header)?;
        f.metadata()
    }) {
        Ok(meta) => meta.len(),
        // Shorter than a header: SQLite's own reading tells what is wrong.
        Err(_) => return Ok(()),
    };
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap());
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(be32(28));
    // SQLite trusts the size in the header only when the change counter matches the
    // version-valid-for number.
    if pages == 0 || be32(24) != be32(92) {
        return Ok(());
    }
    let expected = pages * page_size;
    if len < expected {
        return Err(StoreError::Startup(format!(
            "{} is shorter than its header says ({len} of {expected} bytes): it was truncated. \
             It was left unchanged; restore it from a backup (see README, Backups)",
            db.display()
        )));
    }
    Ok(())
}

/// Whether a WAL with frames in it is beside the database.
fn has_wal(db: &Path) -> bool {
    let mut wal = db.as_os_str().to_os_string();
    wal.push("-wal");
    std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0)
}

/// `db` as the path of a `file:` URI: the characters a URI gives a meaning to, escaped.
fn uri_path(db: &Path) -> String {
    let mut out = String::new();
    for b in db.to_string_lossy().bytes() {
        match b {
            b'%' | b'?' | b'#' => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_server_on_one_database_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let first = prepare(&db).unwrap();
        let err = prepare(&db).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        prepare(&db).unwrap();
    }
}

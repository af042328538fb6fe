//! A store in a directory that every rank sees (a local or shared file system).
//!
//! One file per key, named `v-<escaped key>`. `set` writes a temporary file and renames it
//! over the key's file, so readers see the old value or the new one, never half of one.
//! `get` and `wait` poll (with a growing interval, up to [`MAX_POLL`]). `add` takes a lock
//! file (`lock-<escaped key>`, created exclusively) around read-modify-write; a lock older
//! than [`STALE_LOCK`] is taken to belong to a crashed process and is broken with a warning.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::wire::check_key;
use super::{parse_counter, Store, StoreError};

/// Longest interval between two looks at a missing key.
pub const MAX_POLL: Duration = Duration::from_millis(20);
/// Age after which a counter's lock file is considered abandoned.
pub const STALE_LOCK: Duration = Duration::from_secs(30);

/// Distinguishes temporary files of one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A [`Store`] kept in a directory. See the module docs.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    timeout: Duration,
}

/// Escapes a key into a file-name part: `[A-Za-z0-9.-]` stay, every other byte becomes `_xx`.
fn escape(key: &str) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
            s.push(b as char);
        } else {
            s.push_str(&format!("_{b:02x}"));
        }
    }
    s
}

/// The file of the job's secret in the store's directory (see [`FileStore::job_secret`]).
pub const SECRET_FILE: &str = "secret";

/// Creates (truncating) `path` with mode 0600.
fn owner_only_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Removes the lock file when dropped.
struct LockGuard<'a>(&'a Path);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(self.0) {
            tracing::warn!(path = %self.0.display(), "file store: cannot remove lock: {e}");
        }
    }
}

impl FileStore {
    /// A store in `dir` (created if missing); `timeout` is the default wait of
    /// [`Store::get`] and [`Store::wait`] and bounds how long `add` waits for its lock.
    pub fn new(dir: impl Into<PathBuf>, timeout: Duration) -> Result<FileStore, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(FileStore { dir, timeout })
    }

    /// The job's secret kept in the directory's [`SECRET_FILE`] (mode 0600): rank 0
    /// (`create`) writes a fresh one, the others wait for it (up to the store's timeout)
    /// and read it. A file that others than its owner may read is refused, as is one that
    /// is not 64 hex digits.
    pub fn job_secret(&self, create: bool) -> Result<String, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.dir.join(SECRET_FILE);
        if create {
            let hex: String = ferrocoll_transports::auth::random_bytes(32)?
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect();
            let tmp = self.dir.join(format!("tmp-secret-{}", std::process::id()));
            owner_only_file(&tmp)?.write_all(hex.as_bytes())?;
            fs::rename(&tmp, &path)?;
            return Ok(hex);
        }
        let deadline = Instant::now() + self.timeout;
        let mut poll = Duration::from_millis(1);
        let meta = loop {
            match fs::metadata(&path) {
                Ok(m) if m.len() > 0 => break m,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout {
                    key: format!("{} (the job's secret file)", path.display()),
                });
            }
            std::thread::sleep(poll);
            poll = (poll * 2).min(MAX_POLL);
        };
        if meta.mode() & 0o077 != 0 {
            return Err(StoreError::Protocol(format!(
                "{} may be read by others than its owner (mode {:o}): chmod 600 it",
                path.display(),
                meta.mode() & 0o777
            )));
        }
        let s = fs::read_to_string(&path)?;
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Protocol(format!(
                "{} does not hold a job secret (64 hex digits)",
                path.display()
            )));
        }
        Ok(s)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files in the store's directory whose names start with one of `prefixes`.
    fn files(&self, prefixes: &[&str]) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            if prefixes
                .iter()
                .any(|p| e.file_name().to_string_lossy().starts_with(p))
            {
                out.push(e.path());
            }
        }
        Ok(out)
    }

    /// Whether no key is set (a directory a job may start in).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.files(&["v-"])?.is_empty())
    }

    /// Removes every key, lock and temporary file of the store (its other files and the
    /// directory stay). Whoever still waits on a key then waits for it to be set again.
    pub fn clear(&self) -> Result<(), StoreError> {
        // Keys (`v-`), locks (`lock-`), temporaries (`tmp-`) and the job's secret file;
        // other files are not ours.
        for p in self.files(&["v-", "lock-", "tmp-", SECRET_FILE])? {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key).map_err(StoreError::Protocol)?;
        Ok(self.dir.join(format!("v-{}", escape(key))))
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("lock-{}", escape(key)))
    }

    /// Reads `key` once: `None` if it is not set.
    fn try_read(&self, path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write_atomic(&self, path: &Path, value: &[u8]) -> Result<(), StoreError> {
        let tmp = self.dir.join(format!(
            "tmp-{}-{}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            // Owner-only: the values include the job's key material.
            let mut f = owner_only_file(&tmp)?;
            f.write_all(value)?;
            f.sync_data()?;
            fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        Ok(written?)
    }

    /// Takes the lock of `key`, waiting up to the store's timeout.
    fn lock<'a>(&self, key: &str, lock: &'a Path) -> Result<LockGuard<'a>, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_micros(100);
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(lock)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(LockGuard(lock));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            let age = fs::metadata(lock)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            if age.is_some_and(|a| a > STALE_LOCK) {
                tracing::warn!(key, "file store: breaking a stale lock (holder crashed?)");
                let _ = fs::remove_file(lock);
                continue;
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout { key: key.into() });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_POLL);
        }
    }
}

impl Store for FileStore {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        self.write_atomic(&path, value)
    }

    fn get_timeout(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key)?;
        let deadline = Instant::now().checked_add(timeout);
        let mut pause = Duration::from_micros(200);
        loop {
            if let Some(v) = self.try_read(&path)? {
                return Ok(v);
            }
            let left = deadline.map_or(MAX_POLL, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Err(StoreError::Timeout { key: key.into() });
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    fn wait_timeout(&self, keys: &[&str], timeout: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now().checked_add(timeout);
        for key in keys {
            let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            let path = self.path(key)?;
            if !path.exists() {
                self.get_timeout(key, left)?;
            }
        }
        Ok(())
    }

    fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let path = self.path(key)?;
        let lock = self.lock_path(key);
        let _guard = self.lock(key, &lock)?;
        let old = match self.try_read(&path)? {
            Some(v) => parse_counter(key, &v)?,
            None => 0,
        };
        let new = old
            .checked_add(delta)
            .ok_or_else(|| StoreError::Protocol(format!("counter {key:?} overflows")))?;
        self.write_atomic(&path, new.to_string().as_bytes())?;
        Ok(new)
    }

    fn compare_set(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key)?;
        let lock = self.lock_path(key);
        let _guard = self.lock(key, &lock)?;
        let now = self.try_read(&path)?;
        if now.as_deref() == expected {
            self.write_atomic(&path, new)?;
            return Ok(new.to_vec());
        }
        Ok(now.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_removes_the_stores_files_only() {
        let dir = std::env::temp_dir().join(format!("fc-filestore-clear-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let st = FileStore::new(&dir, Duration::from_millis(100)).unwrap();
        assert!(st.is_empty().unwrap());
        st.set("fc/rank/0", b"x").unwrap();
        st.add("fc/count", 2).unwrap();
        fs::write(dir.join("notes.txt"), b"mine").unwrap();
        assert!(!st.is_empty().unwrap());
        st.clear().unwrap();
        assert!(st.is_empty().unwrap());
        assert!(matches!(
            st.get_timeout("fc/rank/0", Duration::from_millis(10)),
            Err(StoreError::Timeout { .. })
        ));
        assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), b"mine");
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! The content store: `content/<sha256>` holds exactly the bytes of that digest. Content is
//! written to a file beside it, synced, checked against its digest and only then renamed into
//! place, so a crash leaves at most a temporary or `.part` file, never a wrong `<sha256>`.
//! Storing content that is present already is a no-op.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::digest::{Context, SHA256};

use crate::delivery::{Sha256, storage, sync_dir};
use crate::error::Error;

/// The largest content accepted (a node image or a data set, not a disk).
pub const MAX_CONTENT_BYTES: u64 = 4 << 30;

/// Size of the buffer content is copied with (reads, writes and hashing).
pub const CHUNK: usize = 64 << 10;

/// Prefix of an upload's temporary file; left over only by a crash, removed at open.
const UPLOAD_PREFIX: &str = ".upload-";

#[derive(Debug)]
pub struct ContentStore {
    dir: PathBuf,
}

/// A digest held by the store, complete or partial.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    pub sha256: String,
    pub bytes: u64,
}

/// What [`Incoming::finish`] or [`ContentStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The content was written and verified.
    New { bytes: u64 },
    /// The store had it already; nothing was written.
    Present { bytes: u64 },
}

impl ContentStore {
    /// Opens `dir` (created with the first content) and removes the temporary files of uploads
    /// a crash interrupted (`.part` files of fetches stay: they resume).
    pub fn open(dir: &Path) -> Result<ContentStore, Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ContentStore {
                    dir: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(storage(dir, "read", e)),
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(UPLOAD_PREFIX)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(ContentStore {
            dir: dir.to_path_buf(),
        })
    }

    fn create(&self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir).map_err(|e| storage(&self.dir, "create", e))
    }

    pub fn path(&self, sha: &Sha256) -> PathBuf {
        self.dir.join(sha.as_str())
    }

    pub fn part_path(&self, sha: &Sha256) -> PathBuf {
        self.dir.join(format!("{sha}.part"))
    }

    /// The size of the content `sha`, None when the store does not hold it.
    pub fn size(&self, sha: &Sha256) -> Option<u64> {
        std::fs::metadata(self.path(sha)).ok().map(|m| m.len())
    }

    /// Opens the content `sha` for reading, with its size.
    pub fn open_content(&self, sha: &Sha256) -> Result<(File, u64), Error> {
        let path = self.path(sha);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ContentNotFound(sha.to_string()),
            _ => storage(&path, "open", e),
        })?;
        let size = file
            .metadata()
            .map_err(|e| storage(&path, "stat", e))?
            .len();
        Ok((file, size))
    }

    /// Reads the content `sha` again and checks its digest (before it is applied: a disk that
    /// changed a byte since the fetch is caught here).
    pub fn verify(&self, sha: &Sha256) -> Result<(), Error> {
        let (mut file, _) = self.open_content(sha)?;
        let path = self.path(sha);
        let mut hash = Context::new(&SHA256);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(|e| storage(&path, "read", e))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        let actual = Sha256::of_digest(hash.finish());
        if actual == *sha {
            Ok(())
        } else {
            Err(Error::DigestMismatch {
                expected: sha.to_string(),
                actual: actual.to_string(),
            })
        }
    }

    /// Stores `reader`'s bytes as `sha` (see [`Incoming`]).
    pub fn put(&self, sha: &Sha256, reader: &mut impl Read) -> Result<Stored, Error> {
        if let Some(bytes) = self.size(sha) {
            return Ok(Stored::Present { bytes });
        }
        let mut incoming = self.upload(sha)?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| Error::InvalidBody(format!("reading the content: {e}")))?;
            if n == 0 {
                break;
            }
            incoming.write(&buf[..n])?;
        }
        incoming.finish()
    }

    /// A new upload of `sha`, into a temporary file of its own (concurrent uploads of the same
    /// content do not mix; each renames a complete, verified file).
    pub fn upload(&self, sha: &Sha256) -> Result<Incoming, Error> {
        static N: AtomicU64 = AtomicU64::new(0);
        self.create()?;
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{UPLOAD_PREFIX}{sha}-{}-{n}", std::process::id()));
        let file = File::create(&path).map_err(|e| storage(&path, "create", e))?;
        Ok(Incoming {
            expected: sha.clone(),
            target: self.path(sha),
            path,
            file,
            hash: Context::new(&SHA256),
            bytes: 0,
            keep_partial: false,
            done: false,
        })
    }

    /// Continues the partial download of `sha` (`<sha>.part`) from its end: its bytes so far
    /// are hashed again, so the digest covers the whole file.
    pub fn resume(&self, sha: &Sha256) -> Result<Incoming, Error> {
        self.create()?;
        let path = self.part_path(sha);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| storage(&path, "open", e))?;
        let mut hash = Context::new(&SHA256);
        let mut buf = vec![0u8; CHUNK];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| storage(&path, "read", e))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            bytes += n as u64;
        }
        file.seek(SeekFrom::End(0))
            .map_err(|e| storage(&path, "seek", e))?;
        Ok(Incoming {
            expected: sha.clone(),
            target: self.path(sha),
            path,
            file,
            hash,
            bytes,
            keep_partial: true,
            done: false,
        })
    }

    /// Removes the partial download of `sha`, if any.
    pub fn discard_part(&self, sha: &Sha256) -> Result<(), Error> {
        let path = self.part_path(sha);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(storage(&path, "remove", e)),
            _ => Ok(()),
        }
    }

    /// The complete contents and the partial downloads, sorted by digest.
    pub fn list(&self) -> Result<(Vec<Held>, Vec<Held>), Error> {
        let (mut complete, mut partial) = (Vec::new(), Vec::new());
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((complete, partial)),
            Err(e) => return Err(storage(&self.dir, "read", e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let (stem, list) = match name.strip_suffix(".part") {
                Some(stem) => (stem, &mut partial),
                None => (name.as_str(), &mut complete),
            };
            if let Ok(sha) = Sha256::parse(stem) {
                list.push(Held {
                    sha256: sha.to_string(),
                    bytes,
                });
            }
        }
        complete.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        partial.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        Ok((complete, partial))
    }
}

/// Content being received: written to its own file and hashed as it comes. [`Incoming::finish`]
/// syncs it, checks the digest and renames it to `content/<sha256>`. An upload that is dropped
/// unfinished is removed; a fetch's `.part` is kept to resume (unless empty, or its digest was
/// wrong).
pub struct Incoming {
    expected: Sha256,
    target: PathBuf,
    path: PathBuf,
    file: File,
    hash: Context,
    bytes: u64,
    keep_partial: bool,
    done: bool,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("expected", &self.expected)
            .field("path", &self.path)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// Bytes received so far (a resumed download counts its `.part`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if self.bytes + chunk.len() as u64 > MAX_CONTENT_BYTES {
            return Err(Error::BadRequest {
                field: "content",
                rule: "too_large",
                message: format!("content is limited to {MAX_CONTENT_BYTES} bytes"),
            });
        }
        self.file
            .write_all(chunk)
            .map_err(|e| storage(&self.path, "write", e))?;
        self.hash.update(chunk);
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    /// Makes the bytes so far durable (a `.part` then resumes from here after a crash).
    pub fn sync(&self) -> Result<(), Error> {
        self.file
            .sync_data()
            .map_err(|e| storage(&self.path, "sync", e))
    }

    /// Drops the received bytes, also a `.part`'s.
    pub fn abandon(mut self) {
        self.keep_partial = false;
    }

    /// Syncs, verifies the digest and renames the file into place. A wrong digest removes the
    /// file (also a `.part`: its bytes are wrong, resuming would not help).
    pub fn finish(mut self) -> Result<Stored, Error> {
        self.sync()?;
        let actual = Sha256::of_digest(self.hash.clone().finish());
        if actual != self.expected {
            self.keep_partial = false;
            return Err(Error::DigestMismatch {
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        std::fs::rename(&self.path, &self.target)
            .map_err(|e| storage(&self.target, "rename into", e))?;
        self.done = true;
        if let Some(dir) = self.target.parent() {
            sync_dir(dir)?;
        }
        Ok(Stored::New { bytes: self.bytes })
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // An empty part is no progress: not worth a file.
        if !self.done && (!self.keep_partial || self.bytes == 0) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("juki-content-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn put_verifies_and_is_idempotent() {
        let dir = temp_dir("put");
        let store = ContentStore::open(&dir).unwrap();
        let data = b"allow-list v2".to_vec();
        let sha = Sha256::of(&data);
        assert_eq!(store.size(&sha), None);
        assert_eq!(
            store.put(&sha, &mut data.as_slice()).unwrap(),
            Stored::New { bytes: 13 }
        );
        assert_eq!(std::fs::read(store.path(&sha)).unwrap(), data);
        // Present already: the reader is not even read.
        assert_eq!(
            store.put(&sha, &mut &b"other"[..]).unwrap(),
            Stored::Present { bytes: 13 }
        );
        // Wrong bytes for a digest: refused, nothing left behind.
        let other = Sha256::of(b"expected");
        let e = store.put(&other, &mut &b"tampered"[..]).unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert_eq!(store.size(&other), None);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![sha.to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_part_resumes_and_a_crashed_upload_is_cleaned_at_open() {
        let dir = temp_dir("resume");
        let store = ContentStore::open(&dir).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sha = Sha256::of(&data);
        let mut first = store.resume(&sha).unwrap();
        first.write(&data[..70_000]).unwrap();
        first.sync().unwrap();
        drop(first);
        let mut crashed = store.upload(&sha).unwrap();
        crashed.write(&data[..10]).unwrap();
        std::mem::forget(crashed); // a crash runs no destructor
        let store = ContentStore::open(&dir).unwrap();
        let (complete, partial) = store.list().unwrap();
        assert!(complete.is_empty());
        assert_eq!(partial[0].bytes, 70_000);
        let mut second = store.resume(&sha).unwrap();
        assert_eq!(second.bytes(), 70_000);
        second.write(&data[70_000..]).unwrap();
        assert_eq!(
            second.finish().unwrap(),
            Stored::New {
                bytes: data.len() as u64
            }
        );
        assert_eq!(std::fs::read(store.path(&sha)).unwrap(), data);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

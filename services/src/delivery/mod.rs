//! L3, file delivery (ファイルデリバリ): content addressed by sha256, carried down the tree (a
//! prefecture fetches once from the national server and serves its CSs; a CS fetches from its
//! prefecture), and applied as the current version of a named file at the node's next start.
//!
//! The invariants, each kept by one step that is a rename on the same file system:
//! - a file named `content/<sha256>` holds exactly the bytes whose sha256 it is ([`content`]);
//! - a partial download is `content/<sha256>.part` and resumes where it stopped ([`fetch`]);
//! - a named file switches from one version to the next in one rename of its record, which
//!   keeps the previous version for rollback ([`apply`]): after a crash a file is either the
//!   old version or the new one, never a mix.

pub mod apply;
pub mod content;
pub mod fetch;
pub mod signature;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::Error;

pub use apply::{FileName, FileRecord};
pub use content::ContentStore;
pub use signature::DeliveryKeys;

/// A sha256 digest: 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(String);

impl Sha256 {
    /// Parses the digest as written in a path or a request body field `field`.
    pub fn parse_field(s: &str, field: &'static str) -> Result<Sha256, Error> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(Sha256(s.to_owned()))
        } else {
            Err(Error::BadRequest {
                field,
                rule: "format",
                message: format!(
                    "{:?} is not a sha256: 64 lowercase hex digits",
                    s.chars().take(80).collect::<String>()
                ),
            })
        }
    }

    pub fn parse(s: &str) -> Result<Sha256, Error> {
        Sha256::parse_field(s, "sha256")
    }

    /// The digest of a finished hash.
    pub fn of_digest(digest: ring::digest::Digest) -> Sha256 {
        let mut hex = String::with_capacity(64);
        for b in digest.as_ref() {
            hex.push_str(&format!("{b:02x}"));
        }
        Sha256(hex)
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256 {
        Sha256::of_digest(ring::digest::digest(&ring::digest::SHA256, bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The byte range a `Range` header asks for, as (first, last) inclusive; None for the whole
/// content. A header this server does not understand (several ranges, another unit, junk) is
/// ignored, as RFC 9110 allows: the answer is then the whole content.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, Error> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        // bytes=-N: the last N bytes.
        _ if first.is_empty() => match last.parse::<u64>() {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => (size.saturating_sub(n), size.checked_sub(1)),
        },
        (Ok(a), _) if last.is_empty() => (a, size.checked_sub(1)),
        (Ok(a), Ok(b)) if a <= b => (a, Some(b.min(size.saturating_sub(1)))),
        _ => return Ok(None),
    };
    match range {
        (a, Some(b)) if a < size => Ok(Some((a, b))),
        _ => Err(Error::RangeNotSatisfiable { size }),
    }
}

/// A node's deliveries: its content store and its named files, under one directory.
#[derive(Debug)]
pub struct Deliveries {
    pub content: ContentStore,
    /// Whose signature a staged delivery needs (empty: not checked).
    pub keys: DeliveryKeys,
    dir: PathBuf,
    /// The digests being fetched now: one fetch per digest writes its `.part`.
    in_flight: Mutex<HashSet<Sha256>>,
}

/// Holds a digest in [`Deliveries::in_flight`] while it is fetched.
#[derive(Debug)]
pub struct FetchGuard {
    deliveries: Arc<Deliveries>,
    sha: Sha256,
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if let Ok(mut set) = self.deliveries.in_flight.lock() {
            set.remove(&self.sha);
        }
    }
}

impl Deliveries {
    /// Opens the store under `dir`: `content/`, `staged/`, `files/`, each created when first
    /// written (a node that is never given anything leaves no directory).
    pub fn open(dir: &Path) -> Result<Deliveries, Error> {
        let content = ContentStore::open(&dir.join("content"))?;
        Ok(Deliveries {
            content,
            keys: DeliveryKeys::default(),
            dir: dir.to_path_buf(),
            in_flight: Mutex::default(),
        })
    }

    /// The same store, staging only what one of `keys` signed.
    pub fn trusting(mut self, keys: DeliveryKeys) -> Deliveries {
        self.keys = keys;
        self
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Claims `sha` for one fetch; a second concurrent fetch of it is refused.
    pub fn claim(self: &Arc<Self>, sha: &Sha256) -> Result<FetchGuard, Error> {
        let mut set = self
            .in_flight
            .lock()
            .map_err(|_| Error::Storage("fetch registry poisoned".into()))?;
        if !set.insert(sha.clone()) {
            return Err(Error::StateConflict {
                rule: "fetch_in_progress",
                field: Some("sha256"),
                message: format!("{sha} is being fetched already; ask again when it is done"),
            });
        }
        Ok(FetchGuard {
            deliveries: Arc::clone(self),
            sha: sha.clone(),
        })
    }
}

/// An I/O error of the store, naming the path and the step.
pub(crate) fn storage(path: &Path, step: &str, e: std::io::Error) -> Error {
    Error::Storage(format!("{step} {}: {e}", path.display()))
}

/// Makes the renames and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage(dir, "sync directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_strictly() {
        let empty = Sha256::of(b"");
        assert_eq!(
            empty.as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Sha256::parse(empty.as_str()).unwrap(), empty);
        for bad in [
            "",
            "abc",
            &empty.as_str().to_uppercase(),
            &format!("{empty}0"),
        ] {
            let e = Sha256::parse(bad).unwrap_err();
            assert_eq!((e.tag(), e.field()), ("format", Some("sha256")), "{bad:?}");
        }
        assert!(Sha256::parse(&"g".repeat(64)).is_err());
    }

    #[test]
    fn one_fetch_per_digest_at_a_time() {
        let dir = std::env::temp_dir().join(format!("juki-claim-{}", std::process::id()));
        let deliveries = Arc::new(Deliveries::open(&dir).unwrap());
        let sha = Sha256::of(b"x");
        let first = deliveries.claim(&sha).unwrap();
        let e = deliveries.claim(&sha).unwrap_err();
        assert_eq!((e.tag(), e.field()), ("fetch_in_progress", Some("sha256")));
        // Another digest is not held up.
        assert!(deliveries.claim(&Sha256::of(b"y")).is_ok());
        drop(first);
        assert!(deliveries.claim(&sha).is_ok());
        assert!(!dir.exists(), "opening creates nothing");
    }

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100).unwrap(), None);
        assert_eq!(r("bytes=0-").unwrap(), Some((0, 99)));
        assert_eq!(r("bytes=10-19").unwrap(), Some((10, 19)));
        assert_eq!(r("bytes=90-200").unwrap(), Some((90, 99)));
        assert_eq!(r("bytes=-5").unwrap(), Some((95, 99)));
        assert_eq!(r("bytes=-500").unwrap(), Some((0, 99)));
        // Not understood: the whole content.
        for ignored in [
            "items=1-2",
            "bytes=1-2,4-5",
            "bytes=5-1",
            "bytes=x-",
            "bytes=-0",
        ] {
            assert_eq!(r(ignored).unwrap(), None, "{ignored}");
        }
        for past in ["bytes=100-", "bytes=100-120"] {
            assert!(matches!(
                r(past),
                Err(Error::RangeNotSatisfiable { size: 100 })
            ));
        }
        assert!(parse_range(Some("bytes=0-"), 0).is_err());
    }
}

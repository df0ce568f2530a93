//! Named files (the agency allow-list, code tables, configuration) and their versions.
//!
//! A delivered file is *staged* (`staged/<name>.json`: the digest to apply) while the node
//! runs, and *applied* at the node's next start: its record `files/<name>.json` names the
//! current content and the previous one (for rollback). Applying writes the new record to a
//! temporary file, syncs it and renames it over the old one, the one step that switches the
//! version; then it removes the staged entry. A crash before the rename leaves the old version,
//! after it the new one; a staged entry that is current already is only removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::delivery::{Deliveries, Sha256, storage, sync_dir};
use crate::error::Error;

/// A file name: 1–64 lowercase letters, digits, `-`, `_` or `.`, not starting with `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

impl FileName {
    pub fn parse(s: &str) -> Result<FileName, Error> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if ok {
            Ok(FileName(s.to_owned()))
        } else {
            Err(Error::BadRequest {
                field: "file",
                rule: "format",
                message: format!(
                    "{:?}: a file name is 1–64 lowercase letters, digits, '-', '_' or '.', not starting with '.'",
                    s.chars().take(80).collect::<String>()
                ),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of the agency allow-list the provision service reads.
pub const ALLOW_LIST: &str = "allow-list";

/// One version of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub sha256: String,
    /// When the node applied it (RFC 3339).
    pub applied_at: String,
}

/// `files/<name>.json`: the current version and the one before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    pub file: String,
    pub current: Version,
    pub previous: Option<Version>,
}

/// `staged/<name>.json`: what to apply at the next start; `refused` says why the last start
/// did not apply it (it is not tried again until staged anew).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Staged {
    pub file: String,
    /// The version to apply (empty for a removal).
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Remove the file at the next start: a withdrawn first version, with nothing to go back to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
}

/// What applying one staged file did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Outcome {
    /// Switched to the staged version.
    Applied { file: String, sha256: String },
    /// The staged version was current already.
    Unchanged { file: String, sha256: String },
    /// The file was removed (its first version withdrawn): the node has no such file now.
    Removed { file: String },
    /// Not applied: the content is missing or wrong, or the file's check refused it.
    Refused {
        file: String,
        sha256: String,
        reason: String,
    },
}

/// What [`Deliveries::withdraw`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withdrawn {
    /// The staged entry was removed: nothing of it will be applied.
    Unstaged,
    /// It was current: the previous version is staged for the next start.
    RolledBack(Sha256),
    /// It was the current and first version: the file is removed at the next start.
    Removed,
    /// The node neither staged nor applied it.
    Nothing,
}

/// The points between the steps of an apply (tests stop there, as a crash would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The new record is written and synced beside the old one.
    RecordWritten,
    /// The new record replaced the old one: the new version is current.
    Switched,
}

/// Checks a file's content before it is applied (for example: the allow-list parses).
pub type Check<'a> = &'a dyn Fn(&FileName, &Path) -> Result<(), Error>;

/// Writes `value` as JSON to `path` through a synced temporary file and a rename.
fn write_atomic(
    path: &Path,
    value: &impl Serialize,
    stop: &mut dyn FnMut(Step) -> Result<(), Error>,
) -> Result<(), Error> {
    let temp = path.with_extension("json.tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| storage(dir, "create", e))?;
    }
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::Storage(e.to_string()))?;
    std::fs::write(&temp, json)
        .and_then(|()| std::fs::File::open(&temp)?.sync_all())
        .map_err(|e| storage(&temp, "write", e))?;
    stop(Step::RecordWritten)?;
    std::fs::rename(&temp, path).map_err(|e| storage(path, "rename into", e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(storage(path, "read", e)),
    }
}

/// The JSON files of `dir` (not the temporary ones), sorted.
fn json_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(storage(dir, "read", e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    Ok(paths)
}

fn no_stop(_: Step) -> Result<(), Error> {
    Ok(())
}

impl Deliveries {
    fn record_path(&self, name: &FileName) -> PathBuf {
        self.dir()
            .join("files")
            .join(format!("{}.json", name.as_str()))
    }

    fn staged_path(&self, name: &FileName) -> PathBuf {
        self.dir()
            .join("staged")
            .join(format!("{}.json", name.as_str()))
    }

    /// Stages the content `sha` (which the store must hold) as the next version of `name`.
    pub fn stage(&self, name: &FileName, sha: &Sha256) -> Result<(), Error> {
        if self.content.size(sha).is_none() {
            return Err(Error::ContentNotFound(sha.to_string()));
        }
        let staged = Staged {
            file: name.as_str().to_owned(),
            sha256: sha.to_string(),
            refused: None,
            remove: false,
        };
        write_atomic(&self.staged_path(name), &staged, &mut no_stop)
    }

    /// The record of `name`, None when no version was ever applied.
    pub fn record(&self, name: &FileName) -> Result<Option<FileRecord>, Error> {
        read_json(&self.record_path(name))
    }

    pub fn records(&self) -> Result<Vec<FileRecord>, Error> {
        let paths = json_files(&self.dir().join("files"))?;
        paths
            .iter()
            .filter_map(|p| read_json(p).transpose())
            .collect()
    }

    pub fn staged(&self) -> Result<Vec<Staged>, Error> {
        let paths = json_files(&self.dir().join("staged"))?;
        paths
            .iter()
            .filter_map(|p| read_json(p).transpose())
            .collect()
    }

    /// The content of the current version of `name`, None when none was applied.
    pub fn current_path(&self, name: &FileName) -> Result<Option<PathBuf>, Error> {
        let Some(record) = self.record(name)? else {
            return Ok(None);
        };
        let sha = Sha256::parse(&record.current.sha256)?;
        let path = self.content.path(&sha);
        if !path.exists() {
            return Err(Error::Corrupt(format!(
                "{}: the current version {sha} is not in the store",
                name.as_str()
            )));
        }
        Ok(Some(path))
    }

    /// Stages the previous version of `name` (applied at the next start, like any version).
    pub fn rollback(&self, name: &FileName) -> Result<Sha256, Error> {
        let previous =
            self.record(name)?
                .and_then(|r| r.previous)
                .ok_or_else(|| Error::StateConflict {
                    rule: "no_previous_version",
                    field: Some("file"),
                    message: format!("{} has no previous version to roll back to", name.as_str()),
                })?;
        let sha = Sha256::parse(&previous.sha256)?;
        self.stage(name, &sha)?;
        Ok(sha)
    }

    /// Applies every staged file (at the node's start, before it serves). `now` is written
    /// into the records.
    pub fn apply_staged(&self, now: &str, check: Check<'_>) -> Result<Vec<Outcome>, Error> {
        self.apply_staged_with(now, check, &mut no_stop)
    }

    /// [`Deliveries::apply_staged`], calling `stop` between the steps (an error there stops
    /// the apply where it is).
    pub fn apply_staged_with(
        &self,
        now: &str,
        check: Check<'_>,
        stop: &mut dyn FnMut(Step) -> Result<(), Error>,
    ) -> Result<Vec<Outcome>, Error> {
        let mut outcomes = Vec::new();
        for staged in self.staged()? {
            if staged.refused.is_none() {
                outcomes.push(self.apply_one(&staged, now, check, stop)?);
            }
        }
        Ok(outcomes)
    }

    fn apply_one(
        &self,
        staged: &Staged,
        now: &str,
        check: Check<'_>,
        stop: &mut dyn FnMut(Step) -> Result<(), Error>,
    ) -> Result<Outcome, Error> {
        let name = FileName::parse(&staged.file)?;
        let (file, sha256) = (staged.file.clone(), staged.sha256.clone());
        if staged.remove {
            // The record goes first: a crash before the unstage only repeats the removal.
            let path = self.record_path(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.dir().join("files"))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(storage(&path, "remove", e)),
            }
            stop(Step::Switched)?;
            self.unstage(&name)?;
            return Ok(Outcome::Removed { file });
        }
        let record = self.record(&name)?;
        if record.as_ref().is_some_and(|r| r.current.sha256 == sha256) {
            self.unstage(&name)?;
            return Ok(Outcome::Unchanged { file, sha256 });
        }
        if let Err(e) = self.acceptable(&name, &sha256, check) {
            let reason = e.to_string();
            let refused = Staged {
                refused: Some(reason.clone()),
                ..staged.clone()
            };
            write_atomic(&self.staged_path(&name), &refused, &mut no_stop)?;
            return Ok(Outcome::Refused {
                file,
                sha256,
                reason,
            });
        }
        let next = FileRecord {
            file: file.clone(),
            current: Version {
                sha256: sha256.clone(),
                applied_at: now.to_owned(),
            },
            previous: record.map(|r| r.current),
        };
        write_atomic(&self.record_path(&name), &next, stop)?;
        stop(Step::Switched)?;
        self.unstage(&name)?;
        Ok(Outcome::Applied { file, sha256 })
    }

    /// Whether the content `sha` may become the current `name`: present, its digest right,
    /// and passing the file's check.
    fn acceptable(&self, name: &FileName, sha: &str, check: Check<'_>) -> Result<(), Error> {
        let sha = Sha256::parse(sha)?;
        self.content.verify(&sha)?;
        check(name, &self.content.path(&sha))
    }

    /// Takes back the delivery of `sha` as `name`, whatever this node did with it: a staged
    /// entry for it is removed (a refused one too), a current version of it is rolled back to
    /// the previous one (staged, applied at the next start). Idempotent: a node that never had
    /// it, or gave it back already, does nothing.
    pub fn withdraw(&self, name: &FileName, sha: &Sha256) -> Result<Withdrawn, Error> {
        let staged: Option<Staged> = read_json(&self.staged_path(name))?;
        let current = self.record(name)?.map(|r| r.current.sha256);
        if current.as_deref() == Some(sha.as_str()) {
            // The previous version is staged over whatever else was staged; a first version
            // has none, and the file goes.
            return match self.rollback(name) {
                Ok(previous) => Ok(Withdrawn::RolledBack(previous)),
                Err(e) if e.tag() == "no_previous_version" => {
                    let removal = Staged {
                        file: name.as_str().to_owned(),
                        sha256: String::new(),
                        refused: None,
                        remove: true,
                    };
                    write_atomic(&self.staged_path(name), &removal, &mut no_stop)?;
                    Ok(Withdrawn::Removed)
                }
                Err(e) => Err(e),
            };
        }
        if staged.is_some_and(|s| s.sha256 == sha.as_str()) {
            self.unstage(name)?;
            return Ok(Withdrawn::Unstaged);
        }
        Ok(Withdrawn::Nothing)
    }

    fn unstage(&self, name: &FileName) -> Result<(), Error> {
        let path = self.staged_path(name);
        std::fs::remove_file(&path).map_err(|e| storage(&path, "remove", e))?;
        sync_dir(&self.dir().join("staged"))
    }
}

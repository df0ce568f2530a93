//! The operating calendar a node follows, from its file, read again when the file changes.
//!
//! The operator renders `calendar.json` into the node's ConfigMap. An edit of the shared
//! OperatingCalendar (next year's closed dates, a per-prefecture end) must not restart 1,789
//! pods mid-day: the kubelet swaps the mounted file in place, and the node picks it up here on
//! its next use. A new file that does not parse is refused (logged once) and the last valid
//! calendar stays in force.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use juki_calendar::{Calendar, CalendarConfig};

use crate::error::Error;

/// How often the file's metadata is looked at, at most.
const RECHECK: Duration = Duration::from_secs(1);

/// Reads and validates an operating calendar file.
pub fn read_calendar(path: &Path) -> Result<Calendar, Error> {
    let json = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("read calendar {}: {e}", path.display())))?;
    let config: CalendarConfig = serde_json::from_str(&json)
        .map_err(|e| Error::Config(format!("calendar {}: {e}", path.display())))?;
    Calendar::new(&config).map_err(|e| Error::Config(format!("calendar {}: {e}", path.display())))
}

/// The calendar in force: a fixed one (or none: the upstream is always open), or the one in a
/// file that may change while the node runs.
#[derive(Debug, Default)]
pub struct CalendarFile {
    path: Option<PathBuf>,
    state: Mutex<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    calendar: Option<Calendar>,
    /// Modification time and length of the file the calendar was read from.
    stamp: Option<(SystemTime, u64)>,
    /// The stamp of a file that was refused (so it is logged once, not on every use).
    refused: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
}

impl From<Option<Calendar>> for CalendarFile {
    fn from(calendar: Option<Calendar>) -> Self {
        CalendarFile {
            path: None,
            state: Mutex::new(Loaded {
                calendar,
                ..Loaded::default()
            }),
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl CalendarFile {
    /// The calendar of `path`, which must be valid now; later versions are read as they come.
    pub fn watch(path: PathBuf) -> Result<CalendarFile, Error> {
        let stamp = stamp(&path);
        let calendar = read_calendar(&path)?;
        Ok(CalendarFile {
            path: Some(path),
            state: Mutex::new(Loaded {
                calendar: Some(calendar),
                stamp,
                refused: None,
                checked: Some(Instant::now()),
            }),
        })
    }

    /// Whether there is a calendar at all (none: the upstream is always open).
    pub fn is_some(&self) -> bool {
        self.current().is_some()
    }

    /// The calendar in force now, after reading the file again if it changed.
    pub fn current(&self) -> Option<Calendar> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path {
            let due = state.checked.is_none_or(|at| at.elapsed() >= RECHECK);
            if due {
                state.checked = Some(Instant::now());
                reload(path, &mut state);
            }
        }
        state.calendar.clone()
    }
}

fn reload(path: &Path, state: &mut Loaded) {
    let now = stamp(path);
    if now.is_none() || now == state.stamp || now == state.refused {
        return;
    }
    match read_calendar(path) {
        Ok(calendar) => {
            tracing::info!(path = %path.display(), "operating calendar changed; now in force");
            state.calendar = Some(calendar);
            state.stamp = now;
            state.refused = None;
        }
        Err(e) => {
            tracing::error!(error = %e, "new operating calendar refused; the last valid one stays in force");
            state.refused = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use juki_calendar::Tier;

    fn japan(cs_end: &str) -> String {
        serde_json::json!({
            "timeZone": "Asia/Tokyo",
            "onlineWindows": {
                "national": {"start": "07:00", "end": "22:00"},
                "prefecture": {"start": "07:30", "end": "21:30"},
                "cs": {"start": "08:00", "end": cs_end}
            }
        })
        .to_string()
    }

    fn cs_end(file: &CalendarFile) -> String {
        file.current()
            .unwrap()
            .daily_window(Tier::Cs, None)
            .end
            .to_string()
    }

    /// Makes the next `current()` look at the file again (instead of sleeping a second).
    fn expire(file: &CalendarFile) {
        file.state.lock().unwrap().checked = None;
    }

    #[test]
    fn an_edited_file_is_in_force_at_the_next_use_and_a_broken_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("juki-calendar-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("calendar.json");
        std::fs::write(&path, japan("21:00")).unwrap();
        let file = CalendarFile::watch(path.clone()).unwrap();
        assert_eq!(cs_end(&file), "21:00");

        // The kubelet writes a new file (another length, so the stamp differs at once).
        std::fs::write(&path, japan("21:30") + " ").unwrap();
        expire(&file);
        assert_eq!(cs_end(&file), "21:30");

        // A broken edit: the last valid calendar stays.
        std::fs::write(&path, "{\"timeZone\": 7}").unwrap();
        expire(&file);
        assert_eq!(cs_end(&file), "21:30");
        // The file gone (a ConfigMap being rewritten): still the last valid one.
        std::fs::remove_file(&path).unwrap();
        expire(&file);
        assert_eq!(cs_end(&file), "21:30");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broken_file_at_start_is_an_error_naming_it() {
        let path = std::env::temp_dir().join(format!("juki-bad-cal-{}.json", std::process::id()));
        std::fs::write(&path, "not json").unwrap();
        let err = CalendarFile::watch(path.clone()).unwrap_err().to_string();
        assert!(err.contains("juki-bad-cal"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}

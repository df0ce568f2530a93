//! The key of a run: the name of its Job. One name per node, entry, operating date and attempt,
//! so a restarted operator finds the Job it made instead of making a second one.

use std::fmt::Write;

use jiff::civil::Date;

/// One attempt of one run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunKey {
    /// The node's namespace, which is the Job's.
    pub namespace: String,
    pub node: String,
    pub entry: String,
    pub date: Date,
    /// 1 for the first attempt.
    pub attempt: u32,
}

impl RunKey {
    /// The Job's name; see [`job_name`].
    pub fn job_name(&self) -> String {
        job_name(&self.node, &self.entry, self.date, self.attempt)
    }
}

/// `<node>-<entry>-<YYYYMMDD>`, then `-<attempt>` from the second attempt on: a DNS-1123 label of
/// at most 63 characters. The first attempt's name is the calendar batches' Job name
/// (`resources::job_name`), so a batch Job made before the schedule took over is recognized as
/// the same run. A node name that is too long, or holds characters a label cannot ('.'), is cut
/// and followed by a hash of the whole name, which keeps different nodes apart.
pub fn job_name(node: &str, entry: &str, date: Date, attempt: u32) -> String {
    let mut suffix = format!("-{entry}-{}", date.strftime("%Y%m%d"));
    if attempt > 1 {
        write!(suffix, "-{attempt}").unwrap();
    }
    let label_safe = node
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label_safe && node.len() + suffix.len() <= 63 {
        return format!("{node}{suffix}");
    }
    // FNV-1a: stable across releases, unlike std's hasher; the same as resources::job_name.
    let hash = node.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let keep = 63usize.saturating_sub(suffix.len() + 9);
    let head: String = node
        .chars()
        .take(keep)
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let head = head.trim_matches('-');
    if head.is_empty() {
        format!("{:08x}{suffix}", hash as u32)
    } else {
        format!("{head}-{:08x}{suffix}", hash as u32)
    }
}

/// Whether a name is a DNS-1123 label: 1–63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let end = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=63).contains(&b.len()) && b.iter().all(inner) && end(b.first()) && end(b.last())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn the_first_attempt_has_the_calendar_batch_job_name() {
        let day = date(2026, 11, 30);
        for node in [
            "cs-131016",
            "pref-13",
            "a-very-long-node-name-that-goes-on-and-on-and-on-for-ever",
        ] {
            assert_eq!(
                job_name(node, "statistics", day, 1),
                crate::resources::job_name(node, "statistics", day)
            );
        }
        assert_eq!(
            job_name("cs-131016", "backup", day, 3),
            "cs-131016-backup-20261130-3"
        );
    }

    #[test]
    fn dotted_and_long_names_become_distinct_labels() {
        let day = date(2026, 11, 30);
        let dotted = job_name("cs.131016", "backup", day, 1);
        let dashed = job_name("cs-131016", "backup", day, 1);
        assert!(is_dns_label(&dotted), "{dotted}");
        assert_ne!(dotted, dashed);
        let long = "x".repeat(253);
        let name = job_name(&long, "weekly-statistics-ab", day, 11);
        assert!(
            is_dns_label(&name) && name.ends_with("-20261130-11"),
            "{name}"
        );
    }
}

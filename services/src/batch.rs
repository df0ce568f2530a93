//! The daily batch jobs: statistics, backup, and the restore that verifies a backup.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use diesel::prelude::*;
use jiff::civil::Date;
use jiff::tz::{TimeZone, offset};
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::db::{self, DbConnection, DbUrl};
use crate::error::Error;
use crate::schema::{
    change_history, counters, daily_statistics, idempotency_keys, inbox, outbox, provision_log,
    residents,
};

/// Node-wide rows of daily_statistics use this municipality code, with the reasons
/// `relayed` (updates the upstream confirmed that day) and `held` (waiting in the outbox when
/// the batch ran).
pub const NODE_WIDE: &str = "*";

/// One count of the day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatRow {
    pub municipality_code: String,
    pub reason: String,
    pub count: i64,
}

/// The statistics of one operating date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statistics {
    pub date: String,
    /// Updates recorded at this node that day, per municipality and change reason.
    pub updates: Vec<StatRow>,
    pub relayed: i64,
    pub held: i64,
}

/// The instants of `date` in Japan: [start, end).
fn day_bounds(date: Date) -> Result<(Timestamp, Timestamp), Error> {
    let tz = TimeZone::fixed(offset(9));
    let start = date
        .to_zoned(tz.clone())
        .map_err(|e| Error::Batch(format!("date {date}: {e}")))?
        .timestamp();
    let end = date
        .tomorrow()
        .and_then(|d| d.to_zoned(tz))
        .map_err(|e| Error::Batch(format!("date {date}: {e}")))?
        .timestamp();
    Ok((start, end))
}

/// Text bounds a little wider than the day (stored instants are RFC 3339 text whose fractional
/// seconds do not sort as text); the exact filter parses each instant.
fn text_bounds(start: Timestamp, end: Timestamp) -> (String, String) {
    let widen = 2.seconds();
    (
        start.checked_sub(widen).unwrap_or(start).to_string(),
        end.checked_add(widen).unwrap_or(end).to_string(),
    )
}

fn within(text: &str, start: Timestamp, end: Timestamp) -> bool {
    text.parse::<Timestamp>()
        .is_ok_and(|t| t >= start && t < end)
}

/// Computes the statistics of `date`, replaces that date's rows of daily_statistics with them,
/// and returns them.
pub fn statistics(conn: &mut DbConnection, date: Date) -> Result<Statistics, Error> {
    let (start, end) = day_bounds(date)?;
    let (lo, hi) = text_bounds(start, end);
    conn.transaction(|conn| {
        let rows: Vec<(String, String, String)> = change_history::table
            .filter(change_history::recorded_at.ge(&lo))
            .filter(change_history::recorded_at.lt(&hi))
            .select((
                change_history::municipality_code,
                change_history::reason,
                change_history::recorded_at,
            ))
            .load(conn)?;
        let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (municipality, reason, at) in rows {
            if within(&at, start, end) {
                *counts.entry((municipality, reason)).or_default() += 1;
            }
        }
        let sent: Vec<Option<String>> = outbox::table
            .filter(outbox::sent_at.ge(&lo))
            .filter(outbox::sent_at.lt(&hi))
            .select(outbox::sent_at)
            .load(conn)?;
        let relayed = sent
            .iter()
            .flatten()
            .filter(|at| within(at, start, end))
            .count() as i64;
        let held: i64 = outbox::table
            .filter(outbox::sent_at.is_null())
            .count()
            .get_result(conn)?;

        let day = date.to_string();
        diesel::delete(daily_statistics::table.filter(daily_statistics::date.eq(&day)))
            .execute(conn)?;
        let mut updates = Vec::new();
        let mut stored = Vec::new();
        for ((municipality, reason), count) in counts {
            stored.push((municipality.clone(), reason.clone(), count));
            updates.push(StatRow {
                municipality_code: municipality,
                reason,
                count,
            });
        }
        stored.push((NODE_WIDE.into(), "relayed".into(), relayed));
        stored.push((NODE_WIDE.into(), "held".into(), held));
        for (municipality, reason, count) in stored {
            diesel::insert_into(daily_statistics::table)
                .values((
                    daily_statistics::date.eq(&day),
                    daily_statistics::municipality_code.eq(municipality),
                    daily_statistics::reason.eq(reason),
                    daily_statistics::count.eq(count),
                ))
                .execute(conn)?;
        }
        Ok(Statistics {
            date: day,
            updates,
            relayed,
            held,
        })
    })
}

/// The stored statistics of `date` (as written by [`statistics`]).
pub fn stored_statistics(conn: &mut DbConnection, date: Date) -> Result<Vec<StatRow>, Error> {
    let rows: Vec<(String, String, i64)> = daily_statistics::table
        .filter(daily_statistics::date.eq(date.to_string()))
        .order((
            daily_statistics::municipality_code,
            daily_statistics::reason,
        ))
        .select((
            daily_statistics::municipality_code,
            daily_statistics::reason,
            daily_statistics::count,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(municipality_code, reason, count)| StatRow {
            municipality_code,
            reason,
            count,
        })
        .collect())
}

/// Row counts of every table.
pub fn table_counts(conn: &mut DbConnection) -> Result<BTreeMap<String, i64>, Error> {
    let mut m = BTreeMap::new();
    m.insert(
        "residents".into(),
        residents::table.count().get_result(conn)?,
    );
    m.insert(
        "change_history".into(),
        change_history::table.count().get_result(conn)?,
    );
    m.insert("outbox".into(), outbox::table.count().get_result(conn)?);
    m.insert("inbox".into(), inbox::table.count().get_result(conn)?);
    m.insert(
        "daily_statistics".into(),
        daily_statistics::table.count().get_result(conn)?,
    );
    m.insert(
        "provision_log".into(),
        provision_log::table.count().get_result(conn)?,
    );
    m.insert(
        "idempotency_keys".into(),
        idempotency_keys::table.count().get_result(conn)?,
    );
    m.insert("counters".into(), counters::table.count().get_result(conn)?);
    Ok(m)
}

/// The manifest written next to a backup file (`<file>.manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    /// The backup file's name, in the manifest's directory.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_date: Option<String>,
    pub source: String,
    pub tables: BTreeMap<String, i64>,
}

fn io(step: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Batch(format!("{step} {}: {e}", path.display()))
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<(String, u64), Error> {
    let mut file = std::fs::File::open(path).map_err(|e| io("open", path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| io("read", path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        ctx.update(&buf[..n]);
    }
    let hex = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, bytes))
}

fn sqlite_path(url: &DbUrl) -> Result<&str, Error> {
    match url {
        DbUrl::Sqlite(path) => Ok(path),
        DbUrl::Postgres(_) => Err(Error::Batch(
            "backup and restore support SQLite databases; back PostgreSQL up with pg_dump".into(),
        )),
    }
}

/// A consistent copy of the SQLite database at `url` (`VACUUM INTO`, safe while the node runs)
/// into `dir`, with its sha256 and a manifest. Returns the manifest and its path.
pub fn backup(
    url: &DbUrl,
    dir: &Path,
    now: Timestamp,
    operating_date: Option<Date>,
) -> Result<(Manifest, PathBuf), Error> {
    let source = sqlite_path(url)?;
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let name = format!("juki-node-{stamp}.db");
    let path = dir.join(&name);
    if path.exists() {
        return Err(Error::Batch(format!("{} exists already", path.display())));
    }
    let mut conn = url
        .connect()
        .map_err(|e| Error::Batch(format!("open {source}: {e}")))?;
    let target = path.to_string_lossy().replace('\'', "''");
    diesel::sql_query(format!("VACUUM INTO '{target}'")).execute(&mut conn)?;
    drop(conn);
    let mut copy = DbUrl::Sqlite(path.to_string_lossy().into_owned())
        .connect()
        .map_err(|e| Error::Batch(format!("open the backup: {e}")))?;
    let tables = table_counts(&mut copy)?;
    drop(copy);
    let (sha256, bytes) = sha256_file(&path)?;
    let manifest = Manifest {
        format: "sqlite".into(),
        file: name,
        bytes,
        sha256,
        created_at: now.to_string(),
        operating_date: operating_date.map(|d| d.to_string()),
        source: source.to_owned(),
        tables,
    };
    let manifest_path = dir.join(format!("{}.manifest.json", manifest.file));
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Batch(e.to_string()))?;
    std::fs::write(&manifest_path, json).map_err(|e| io("write", &manifest_path, e))?;
    Ok((manifest, manifest_path))
}

/// Verifies the backup named by `manifest_path` (size and sha256) and restores it into the
/// SQLite database at `target` (which must not exist unless `force`); then applies pending
/// migrations and checks the row counts against the manifest.
pub fn restore(manifest_path: &Path, target: &DbUrl, force: bool) -> Result<Manifest, Error> {
    let target_path = PathBuf::from(sqlite_path(target)?);
    let text = std::fs::read_to_string(manifest_path).map_err(|e| io("read", manifest_path, e))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| Error::Batch(format!("manifest {}: {e}", manifest_path.display())))?;
    if manifest.format != "sqlite" || manifest.file.contains('/') {
        return Err(Error::Batch(format!(
            "manifest {}: unsupported format {:?} or file {:?}",
            manifest_path.display(),
            manifest.format,
            manifest.file
        )));
    }
    let file = manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&manifest.file);
    let (sha256, bytes) = sha256_file(&file)?;
    if sha256 != manifest.sha256 || bytes != manifest.bytes {
        return Err(Error::Corrupt(format!(
            "backup {} does not match its manifest: sha256 {sha256} ({bytes} bytes), expected {} ({} bytes)",
            file.display(),
            manifest.sha256,
            manifest.bytes
        )));
    }
    if target_path.exists() && !force {
        return Err(Error::Batch(format!(
            "{} exists; pass --force to replace it",
            target_path.display()
        )));
    }
    let mut tmp = target_path.clone().into_os_string();
    tmp.push(".restoring");
    let tmp = PathBuf::from(tmp);
    std::fs::copy(&file, &tmp).map_err(|e| io("copy to", &tmp, e))?;
    for suffix in ["-wal", "-shm"] {
        let mut p = target_path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    std::fs::rename(&tmp, &target_path).map_err(|e| io("rename to", &target_path, e))?;
    let mut conn = target
        .connect()
        .map_err(|e| Error::Batch(format!("open the restored database: {e}")))?;
    let counts = table_counts(&mut conn)?;
    if counts != manifest.tables {
        return Err(Error::Corrupt(format!(
            "restored row counts {counts:?} differ from the manifest's {:?}",
            manifest.tables
        )));
    }
    db::run_migrations(&mut conn)?;
    Ok(manifest)
}

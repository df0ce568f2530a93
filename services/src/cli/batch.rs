//! The batch jobs: the daily statistics and backup (SQLite and PostgreSQL), the weekly report
//! and the monthly audit, and the restore that verifies a backup.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use jiff::civil::Date;
use jiff::tz::{TimeZone, offset};
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::cli::pgtools::{self, Tool};
use crate::error::Error;
use crate::store::db::{self, DbConnection, DbUrl};
use crate::store::schema::{
    change_history, counters, daily_statistics, idempotency_keys, inbox, issuance_log, issuances,
    mailbox, outbox, provision_log, residents, transfers,
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

/// The week's statistics: the stored daily statistics of the seven days ending at `date`, summed
/// per municipality and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeeklyReport {
    pub from: String,
    pub to: String,
    /// The days of the week whose statistics ran (a closed day has none).
    pub days: Vec<String>,
    pub totals: Vec<StatRow>,
}

/// Sums the stored daily statistics of `date` and the six days before it.
pub fn weekly_report(conn: &mut DbConnection, date: Date) -> Result<WeeklyReport, Error> {
    let from = date
        .checked_sub(6.days())
        .map_err(|e| Error::Batch(format!("date {date}: {e}")))?;
    let rows: Vec<(String, String, String, i64)> = daily_statistics::table
        .filter(daily_statistics::date.ge(from.to_string()))
        .filter(daily_statistics::date.le(date.to_string()))
        .select((
            daily_statistics::date,
            daily_statistics::municipality_code,
            daily_statistics::reason,
            daily_statistics::count,
        ))
        .load(conn)?;
    let mut days = std::collections::BTreeSet::new();
    let mut totals: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut held: Option<(String, i64)> = None;
    for (day, municipality, reason, count) in rows {
        days.insert(day.clone());
        if municipality == NODE_WIDE && reason == "held" {
            // A snapshot, not a count of the day: the week ends with its last day's.
            if held.as_ref().is_none_or(|(d, _)| *d < day) {
                held = Some((day, count));
            }
            continue;
        }
        *totals.entry((municipality, reason)).or_default() += count;
    }
    if let Some((_, count)) = held {
        totals.insert((NODE_WIDE.into(), "held".into()), count);
    }
    Ok(WeeklyReport {
        from: from.to_string(),
        to: date.to_string(),
        days: days.into_iter().collect(),
        totals: totals
            .into_iter()
            .map(|((municipality_code, reason), count)| StatRow {
                municipality_code,
                reason,
                count,
            })
            .collect(),
    })
}

/// One count of the monthly audit: provisions to one recipient with one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub recipient: String,
    pub outcome: String,
    pub count: i64,
}

/// The audit of the month before `date`'s month: every provision of personal information
/// (provision_log) counted per recipient and outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthlyAudit {
    /// YYYY-MM.
    pub month: String,
    pub provisions: i64,
    pub by_recipient: Vec<AuditRow>,
}

/// Audits the provisions of the month before `date`'s (the batch runs on the 1st, or the next
/// open day).
pub fn monthly_audit(conn: &mut DbConnection, date: Date) -> Result<MonthlyAudit, Error> {
    let this_month = date.first_of_month();
    let month = this_month
        .checked_sub(1.month())
        .map_err(|e| Error::Batch(format!("date {date}: {e}")))?;
    let (start, _) = day_bounds(month)?;
    let (end, _) = day_bounds(this_month)?;
    let (lo, hi) = text_bounds(start, end);
    let rows: Vec<(String, String, String)> = provision_log::table
        .filter(provision_log::at.ge(&lo))
        .filter(provision_log::at.lt(&hi))
        .select((
            provision_log::at,
            provision_log::recipient,
            provision_log::outcome,
        ))
        .load(conn)?;
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (at, recipient, outcome) in rows {
        if within(&at, start, end) {
            *counts.entry((recipient, outcome)).or_default() += 1;
        }
    }
    Ok(MonthlyAudit {
        month: month.strftime("%Y-%m").to_string(),
        provisions: counts.values().sum(),
        by_recipient: counts
            .into_iter()
            .map(|((recipient, outcome), count)| AuditRow {
                recipient,
                outcome,
                count,
            })
            .collect(),
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
    m.insert("mailbox".into(), mailbox::table.count().get_result(conn)?);
    m.insert(
        "transfers".into(),
        transfers::table.count().get_result(conn)?,
    );
    m.insert(
        "issuances".into(),
        issuances::table.count().get_result(conn)?,
    );
    m.insert(
        "issuance_log".into(),
        issuance_log::table.count().get_result(conn)?,
    );
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

/// The manifest `format` of a SQLite backup (a database file written by `VACUUM INTO`).
pub const FORMAT_SQLITE: &str = "sqlite";
/// The manifest `format` of a PostgreSQL backup (a `pg_dump --format=custom` archive).
pub const FORMAT_PG_DUMP: &str = "postgres-pg_dump";

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<PathBuf, Error> {
    let manifest_path = dir.join(format!("{}.manifest.json", manifest.file));
    let json = serde_json::to_string_pretty(manifest).map_err(|e| Error::Batch(e.to_string()))?;
    std::fs::write(&manifest_path, json).map_err(|e| io("write", &manifest_path, e))?;
    Ok(manifest_path)
}

/// The backup file `dir/juki-node-<UTC stamp>.<ext>`, which must not exist yet.
fn backup_file(dir: &Path, now: Timestamp, ext: &str) -> Result<(String, PathBuf), Error> {
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let name = format!("juki-node-{stamp}.{ext}");
    let path = dir.join(&name);
    if path.exists() {
        return Err(Error::Batch(format!("{} exists already", path.display())));
    }
    Ok((name, path))
}

/// Backs the database at `url` up into `dir` with its sha256 and a manifest
/// (`<file>.manifest.json`); returns the manifest and its path.
///
/// SQLite: a consistent copy with `VACUUM INTO` (safe while the node runs). PostgreSQL: a
/// `pg_dump` archive (see [`backup_postgres`]).
pub fn backup(
    url: &DbUrl,
    dir: &Path,
    now: Timestamp,
    operating_date: Option<Date>,
) -> Result<(Manifest, PathBuf), Error> {
    match url {
        DbUrl::Sqlite(source) => backup_sqlite(source, dir, now, operating_date),
        DbUrl::Postgres(source) => backup_postgres(source, dir, now, operating_date),
    }
}

fn backup_sqlite(
    source: &str,
    dir: &Path,
    now: Timestamp,
    operating_date: Option<Date>,
) -> Result<(Manifest, PathBuf), Error> {
    let url = DbUrl::Sqlite(source.to_owned());
    let (name, path) = backup_file(dir, now, "db")?;
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
        format: FORMAT_SQLITE.into(),
        file: name,
        bytes,
        sha256,
        created_at: now.to_string(),
        operating_date: operating_date.map(|d| d.to_string()),
        source: source.to_owned(),
        tables,
    };
    let manifest_path = write_manifest(dir, &manifest)?;
    Ok((manifest, manifest_path))
}

#[derive(QueryableByName)]
struct SnapshotId {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// A PostgreSQL backup: `pg_dump --format=custom` into `dir/juki-node-<stamp>.pgdump`.
///
/// The custom format rather than plain SQL: it is one compressed file (so one sha256 covers
/// it), `pg_restore` checks its structure before writing anything, restores it in a single
/// transaction and can skip ownership and privileges (`--no-owner --no-privileges`), so a
/// backup restores into a database owned by another role.
///
/// The row counts of the manifest are those of the dump: they are counted inside a
/// `REPEATABLE READ` transaction whose snapshot `pg_dump` imports (`--snapshot`), so rows the
/// running node writes meanwhile are in neither.
fn backup_postgres(
    source: &str,
    dir: &Path,
    now: Timestamp,
    operating_date: Option<Date>,
) -> Result<(Manifest, PathBuf), Error> {
    let pg_dump = pgtools::locate(Tool::PgDump)?;
    let url = pgtools::split_password(source);
    let redacted = pgtools::redact(source);
    let (name, path) = backup_file(dir, now, "pgdump")?;
    let mut conn = DbUrl::Postgres(source.to_owned())
        .connect()
        .map_err(|e| Error::Batch(format!("connect to {redacted}: {e}")))?;
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    let dumped = (|| {
        let snapshot: SnapshotId =
            diesel::sql_query("SELECT pg_export_snapshot() AS id").get_result(&mut conn)?;
        let tables = table_counts(&mut conn)?;
        let args = vec![
            "--format=custom".to_owned(),
            format!("--snapshot={}", snapshot.id),
            format!("--file={}", path.display()),
            format!("--dbname={}", url.without_password),
        ];
        pgtools::run(Tool::PgDump, &pg_dump, &args, url.password.as_deref())?;
        Ok::<_, Error>(tables)
    })();
    let _ = conn.batch_execute("COMMIT");
    drop(conn);
    let tables = match dumped {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let (sha256, bytes) = sha256_file(&path)?;
    let manifest = Manifest {
        format: FORMAT_PG_DUMP.into(),
        file: name,
        bytes,
        sha256,
        created_at: now.to_string(),
        operating_date: operating_date.map(|d| d.to_string()),
        source: redacted,
        tables,
    };
    let manifest_path = write_manifest(dir, &manifest)?;
    Ok((manifest, manifest_path))
}

/// Verifies the backup named by `manifest_path` (size and sha256) and restores it into
/// `target`, then checks the row counts against the manifest and applies pending migrations.
///
/// The backup's format must fit the target (a SQLite file into a SQLite path, a pg_dump archive
/// into a PostgreSQL database). A SQLite target file must not exist, a PostgreSQL target
/// database (which must exist) must have no relation in its `public` schema, unless `force`.
/// Nothing is written before the checksum is verified.
pub fn restore(manifest_path: &Path, target: &DbUrl, force: bool) -> Result<Manifest, Error> {
    let text = std::fs::read_to_string(manifest_path).map_err(|e| io("read", manifest_path, e))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| Error::Batch(format!("manifest {}: {e}", manifest_path.display())))?;
    if manifest.file.contains('/') || manifest.file.is_empty() {
        return Err(Error::Batch(format!(
            "manifest {}: file {:?} must be a file name beside the manifest",
            manifest_path.display(),
            manifest.file
        )));
    }
    let expected = match target {
        DbUrl::Sqlite(_) => FORMAT_SQLITE,
        DbUrl::Postgres(_) => FORMAT_PG_DUMP,
    };
    if manifest.format != expected {
        return Err(Error::Batch(format!(
            "manifest {}: a backup of format {:?} cannot be restored into a {} database \
             (expected format {expected:?})",
            manifest_path.display(),
            manifest.format,
            target.backend()
        )));
    }
    let file = manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&manifest.file);
    let (sha256, bytes) = sha256_file(&file)?;
    if sha256 != manifest.sha256 || bytes != manifest.bytes {
        return Err(Error::Corrupt(format!(
            "backup {} does not match its manifest (checksum mismatch): sha256 {sha256} ({bytes} bytes), expected {} ({} bytes)",
            file.display(),
            manifest.sha256,
            manifest.bytes
        )));
    }
    let mut conn = match target {
        DbUrl::Sqlite(path) => restore_sqlite(&file, Path::new(path), force, target)?,
        DbUrl::Postgres(url) => restore_postgres(&file, url, force)?,
    };
    let counts = table_counts(&mut conn)?;
    if counts != manifest.tables {
        let differ: Vec<String> = manifest
            .tables
            .keys()
            .chain(counts.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|t| counts.get(*t) != manifest.tables.get(*t))
            .map(|t| {
                format!(
                    "{t}: restored {:?}, manifest {:?}",
                    counts.get(t),
                    manifest.tables.get(t)
                )
            })
            .collect();
        return Err(Error::Corrupt(format!(
            "restored row counts differ from the manifest: {}",
            differ.join("; ")
        )));
    }
    db::run_migrations(&mut conn)?;
    Ok(manifest)
}

fn restore_sqlite(
    file: &Path,
    target_path: &Path,
    force: bool,
    target: &DbUrl,
) -> Result<DbConnection, Error> {
    if target_path.exists() && !force {
        return Err(Error::Batch(format!(
            "{} exists; pass --force to replace it",
            target_path.display()
        )));
    }
    let mut tmp = target_path.to_path_buf().into_os_string();
    tmp.push(".restoring");
    let tmp = PathBuf::from(tmp);
    std::fs::copy(file, &tmp).map_err(|e| io("copy to", &tmp, e))?;
    for suffix in ["-wal", "-shm"] {
        let mut p = target_path.to_path_buf().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    std::fs::rename(&tmp, target_path).map_err(|e| io("rename to", target_path, e))?;
    target
        .connect()
        .map_err(|e| Error::Batch(format!("open the restored database: {e}")))
}

#[derive(QueryableByName)]
struct Relation {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    kind: String,
}

/// The relations of the `public` schema (tables, views, sequences, …; not indexes).
fn public_relations(conn: &mut DbConnection) -> Result<Vec<Relation>, Error> {
    Ok(diesel::sql_query(
        "SELECT c.relname::text AS name, c.relkind::text AS kind FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') \
         ORDER BY c.relname",
    )
    .load(conn)?)
}

/// Restores a pg_dump archive with `pg_restore --single-transaction` (all or nothing). With
/// `force`, the relations of the target's `public` schema are dropped first (in their own
/// transaction: should pg_restore then fail, the target is left empty and the restore can be
/// repeated).
fn restore_postgres(file: &Path, target: &str, force: bool) -> Result<DbConnection, Error> {
    let pg_restore = pgtools::locate(Tool::PgRestore)?;
    let redacted = pgtools::redact(target);
    let mut conn = DbUrl::Postgres(target.to_owned())
        .connect()
        .map_err(|e| Error::Batch(format!("connect to {redacted}: {e}")))?;
    let existing = public_relations(&mut conn)?;
    if !existing.is_empty() {
        if !force {
            return Err(Error::Batch(format!(
                "{redacted} is not empty ({} relations in schema public, e.g. {}); pass --force to replace its contents",
                existing.len(),
                existing[0].name
            )));
        }
        conn.transaction(|conn| {
            for r in &existing {
                let what = match r.kind.as_str() {
                    "v" => "VIEW",
                    "m" => "MATERIALIZED VIEW",
                    "S" => "SEQUENCE",
                    "f" => "FOREIGN TABLE",
                    _ => "TABLE",
                };
                let name = r.name.replace('"', "\"\"");
                conn.batch_execute(&format!("DROP {what} IF EXISTS public.\"{name}\" CASCADE"))?;
            }
            Ok::<_, Error>(())
        })?;
    }
    // The append-only trigger function (db::install_guards) is in the archive too.
    conn.batch_execute("DROP FUNCTION IF EXISTS public.juki_append_only() CASCADE")?;
    let url = pgtools::split_password(target);
    let args = vec![
        "--single-transaction".to_owned(),
        "--exit-on-error".to_owned(),
        "--no-owner".to_owned(),
        "--no-privileges".to_owned(),
        format!("--dbname={}", url.without_password),
        file.display().to_string(),
    ];
    pgtools::run(Tool::PgRestore, &pg_restore, &args, url.password.as_deref())?;
    Ok(conn)
}

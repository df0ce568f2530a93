//! kubectl-juki: on PATH it runs as `kubectl juki`. Views of the operating calendar that need no
//! cluster.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jiff::civil::Date;
use juki_operator::preview::{self, Lang};
use juki_operator::schedule::{Schedule, plan};

#[derive(Parser)]
#[command(
    name = "kubectl-juki",
    version,
    about = "jukinet views for kubectl: holidays and operating calendars"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the Japanese national holidays as `YYYY-MM-DD,name` lines.
    Holidays {
        /// First year (1948 or later).
        from_year: i16,
        /// Last year, inclusive; defaults to FROM_YEAR.
        to_year: Option<i16>,
        /// Language of the names.
        #[arg(long, value_enum, default_value = "ja")]
        lang: Lang,
    },
    /// Print the open and closed days and each tier's windows of an OperatingCalendar manifest.
    Calendar {
        /// A YAML file holding an OperatingCalendar (other documents are skipped).
        file: std::path::PathBuf,
        /// First date, YYYY-MM-DD.
        #[arg(long)]
        from: Date,
        /// Number of days.
        #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(i32).range(1..=3660))]
        days: i32,
    },
    /// Show the live national → prefecture → CS tree with each node's phase, reason and next
    /// transition (needs a cluster: the current kubeconfig context).
    Tree {
        /// Only this namespace (its nodes must form a whole topology); all namespaces by default.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Time zone of the times shown.
        #[arg(long, default_value = "Asia/Tokyo")]
        time_zone: String,
    },
    /// Forecast the operator's transitions for a calendar and a topology, without a cluster.
    Plan {
        /// A YAML file holding an OperatingCalendar.
        #[arg(long)]
        calendar: std::path::PathBuf,
        /// A YAML file holding JukiNodes (other documents are skipped).
        #[arg(long)]
        topology: std::path::PathBuf,
        /// Start: an RFC 3339 instant, or a date or date-time in the calendar's time zone.
        #[arg(long)]
        from: String,
        /// Number of days.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=366))]
        days: i32,
        /// A YAML file holding JobSchedules: their runs and each night's deadline are listed
        /// after the transitions (an ideal cluster: every run succeeds at once).
        #[arg(long)]
        schedule: Option<std::path::PathBuf>,
    },
}

fn read(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<String, String> {
    match cli.command {
        Command::Holidays {
            from_year,
            to_year,
            lang,
        } => {
            let to_year = to_year.unwrap_or(from_year);
            if !(1948..=9999).contains(&from_year) || to_year < from_year || to_year > 9999 {
                return Err(format!(
                    "years must satisfy 1948 <= FROM_YEAR <= TO_YEAR <= 9999, got {from_year}..{to_year}"
                ));
            }
            Ok(preview::holiday_lines(from_year, to_year, lang))
        }
        Command::Calendar { file, from, days } => {
            let text = read(&file)?;
            let (_, calendar) = preview::calendar_from_manifest(&text)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            Ok(preview::calendar_lines(&calendar, from, days))
        }
        Command::Tree {
            namespace,
            time_zone,
        } => {
            let tz = jiff::tz::TimeZone::get(&time_zone)
                .map_err(|_| format!("--time-zone: {time_zone:?} is not a known IANA time zone"))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let nodes = runtime.block_on(async {
                let client = kube::Client::try_default()
                    .await
                    .map_err(|e| format!("no cluster: {e}"))?;
                let api: kube::Api<juki_operator::api::JukiNode> = match &namespace {
                    Some(ns) => kube::Api::namespaced(client, ns),
                    None => kube::Api::all(client),
                };
                api.list(&Default::default())
                    .await
                    .map(|l| l.items)
                    .map_err(|e| format!("listing JukiNodes: {e}"))
            })?;
            Ok(juki_operator::tree::render(&nodes, &tz))
        }
        Command::Plan {
            calendar,
            topology,
            from,
            days,
            schedule,
        } => {
            let (_, cal) = preview::calendar_from_manifest(&read(&calendar)?)
                .map_err(|e| format!("{}: {e}", calendar.display()))?;
            let nodes = preview::nodes_from_manifest(&read(&topology)?)
                .map_err(|e| format!("{}: {e}", topology.display()))?;
            let start = preview::parse_instant(&from, cal.time_zone())
                .map_err(|e| format!("--from: {e}"))?;
            let end = start
                .checked_add(jiff::SignedDuration::from_hours(24 * i64::from(days)))
                .map_err(|e| format!("--days: {e}"))?;
            let forecast = juki_operator::forecast::simulate(&cal, &nodes, start, end);
            let mut out = juki_operator::forecast::render(&cal, &nodes, &forecast);
            if let Some(file) = schedule {
                let nodes = plan::nodes_from_manifest(&read(&topology)?)
                    .map_err(|e| format!("{}: {e}", topology.display()))?;
                out.push_str(&schedule_plan(&cal, &file, &nodes, start, end)?);
            }
            Ok(out)
        }
    }
}

/// The forecast of every JobSchedule in `file`.
fn schedule_plan(
    cal: &juki_calendar::Calendar,
    file: &std::path::Path,
    nodes: &[juki_operator::schedule::ScheduleNode],
    start: jiff::Timestamp,
    end: jiff::Timestamp,
) -> Result<String, String> {
    let at = |e: String| format!("{}: {e}", file.display());
    let mut out = String::new();
    for resource in plan::schedules_from_manifest(&read(file)?).map_err(at)? {
        let name = resource.metadata.name.clone().unwrap_or_default();
        let namespace = resource.metadata.namespace.as_deref().unwrap_or("default");
        let schedule =
            Schedule::new(&resource.spec).map_err(|e| at(format!("JobSchedule {name:?}: {e}")))?;
        let runs = plan::simulate(cal, &schedule, namespace, nodes, start, end);
        out.push_str(&plan::render(cal, &name, &schedule, nodes, &runs));
    }
    Ok(out)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("kubectl juki: {message}");
            ExitCode::FAILURE
        }
    }
}

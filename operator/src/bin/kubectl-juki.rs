//! kubectl-juki: on PATH it runs as `kubectl juki`. Views of the operating calendar that need no
//! cluster.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jiff::civil::Date;
use juki_operator::country;
use juki_operator::preview::{self, Lang};
use juki_operator::schedule::{Schedule, plan};

#[derive(Parser)]
#[command(
    name = "kubectl-juki",
    version,
    about = "jukinet views for kubectl: holidays, operating calendars, the live tree and status"
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
    /// The whole country at a glance: per tier and per prefecture the nodes by phase, how many
    /// the calendar wants Online beside how many are, the faults with their node and since when,
    /// and the next transitions (needs a cluster: one list each of JukiNodes,
    /// OperatingCalendars and ServiceExtensions).
    Status {
        /// Only this namespace; all namespaces by default.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Time zone of the times shown.
        #[arg(long, default_value = "Asia/Tokyo")]
        time_zone: String,
        /// Judge at this instant instead of now (an operator on a fast clock): RFC 3339, or a
        /// date-time in --time-zone.
        #[arg(long)]
        at: Option<String>,
        /// Colours: auto (on a terminal only), always or never.
        #[arg(long, value_enum, default_value = "auto")]
        color: Color,
        /// Refresh every SECONDS until interrupted (the screen is redrawn on a terminal).
        #[arg(long, short = 'w', value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
        watch: Option<u64>,
    },
    /// What the JobSchedules ran, are running, and what is late or failed: each schedule's
    /// counts and validity, then its runs, failures first (needs a cluster: one list of
    /// JobSchedules).
    Jobs {
        /// Only this namespace; all namespaces by default.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// Run one more attempt of a scheduled run (a node, an entry, an operating day) now: after
    /// a failure, a given-up run, or to run it again. The operator follows it as any attempt.
    /// Refused while the run's latest attempt is running (needs a cluster).
    Rerun {
        /// The JobSchedule's name.
        schedule: String,
        /// The JobSchedule's namespace; the kubeconfig's by default.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// The node: NAME (in the schedule's namespace) or NAMESPACE/NAME.
        #[arg(long)]
        node: String,
        /// The entry's name.
        #[arg(long)]
        entry: String,
        /// The operating date, YYYY-MM-DD.
        #[arg(long)]
        date: Date,
    },
    /// Hold (保留) an entry of a JobSchedule: no new attempt of it starts until released;
    /// attempts already running go on (needs a cluster).
    Hold {
        /// The JobSchedule's name.
        schedule: String,
        /// The JobSchedule's namespace; the kubeconfig's by default.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// The entry's name.
        #[arg(long)]
        entry: String,
    },
    /// Release a held entry: its due runs start as the schedule allows (needs a cluster).
    Release {
        /// The JobSchedule's name.
        schedule: String,
        /// The JobSchedule's namespace; the kubeconfig's by default.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// The entry's name.
        #[arg(long)]
        entry: String,
    },
    /// A FileDelivery: its status as a person reads it, or pause, resume or roll it back (needs
    /// a cluster).
    Delivery {
        #[command(subcommand)]
        action: DeliveryAction,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// Every object of a kind, in `namespace` or all: one list call.
async fn list_all<K>(client: &kube::Client, namespace: Option<&str>) -> Result<Vec<K>, String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
{
    let api: kube::Api<K> = match namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("listing {}s: {e}", K::kind(&())))
}

#[derive(Subcommand)]
enum DeliveryAction {
    /// Phase, wave, counts, per prefecture, the failed nodes and what is left to take back.
    Status(DeliveryName),
    /// Fetch nothing new until resumed (what was fetched is still applied at the next start).
    Pause(DeliveryName),
    /// Let the waves go on.
    Resume(DeliveryName),
    /// Take it back from every node: unstaged where fetched, the previous version at the next
    /// start where applied.
    Rollback(DeliveryName),
    /// Upload a file too big for a ConfigMap to the national server (through the API server's
    /// service proxy) and print its sha256, for a FileDelivery with `source: {upload: {}}`.
    Upload(UploadArgs),
}

#[derive(clap::Args)]
struct UploadArgs {
    /// The file to upload.
    file: std::path::PathBuf,
    /// The national JukiNode's namespace; the kubeconfig's by default.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// The national JukiNode's name; by default the one National JukiNode of the namespace.
    #[arg(long)]
    node: Option<String>,
}

#[derive(clap::Args)]
struct DeliveryName {
    /// The FileDelivery's name.
    name: String,
    /// Its namespace; the kubeconfig's by default.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
}

/// Uploads a file to the national server's content store.
async fn upload(args: UploadArgs) -> Result<String, String> {
    use juki_operator::api::JukiNode;
    use juki_operator::node_client::{self, NodeRoute};
    let bytes = std::fs::read(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let sha: String = ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no cluster: {e}"))?;
    let ns = args
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let nodes = kube::Api::<JukiNode>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .map_err(|e| format!("listing JukiNodes in {ns}: {e}"))?;
    let nationals: Vec<&JukiNode> = nodes
        .items
        .iter()
        .filter(|n| n.spec.tier == juki_calendar::Tier::National)
        .filter(|n| {
            args.node
                .as_ref()
                .is_none_or(|want| n.metadata.name.as_ref() == Some(want))
        })
        .collect();
    let national = match nationals[..] {
        [one] => one,
        [] => {
            return Err(format!(
                "no National JukiNode {} in {ns}",
                args.node.as_deref().unwrap_or("")
            ));
        }
        _ => {
            return Err(format!(
                "several National JukiNodes in {ns}: name one with --node"
            ));
        }
    };
    let name = national.metadata.name.clone().unwrap_or_default();
    if national.spec.tls.is_some() {
        return Err(format!(
            "{ns}/{name} serves mutual TLS: only the operator's certificate opens its admin API"
        ));
    }
    let route = NodeRoute::proxy(&client, &ns, &name, juki_operator::resources::PORT);
    let path = format!("/admin/v1/deliveries/content/{sha}");
    let size = bytes.len();
    let timeout = std::time::Duration::from_secs(600);
    let answer = node_client::call(&route, http::Method::PUT, &path, bytes, false, timeout).await?;
    if !answer.ok() {
        return Err(format!(
            "{ns}/{name} answered {}: {}",
            answer.status,
            answer.excerpt(300)
        ));
    }
    Ok(format!(
        "uploaded {} ({size} bytes) to {ns}/{name}\nsha256: {sha}\n",
        args.file.display()
    ))
}

/// Runs a `kubectl juki delivery` action.
async fn delivery(action: DeliveryAction) -> Result<String, String> {
    use juki_operator::api::FileDelivery;
    let (target, field, value, done) = match action {
        DeliveryAction::Upload(args) => return upload(args).await,
        DeliveryAction::Status(target) => (target, None, false, ""),
        DeliveryAction::Pause(target) => (target, Some("paused"), true, "paused"),
        DeliveryAction::Resume(target) => (target, Some("paused"), false, "resumed"),
        DeliveryAction::Rollback(target) => (target, Some("rollback"), true, "rolled back"),
    };
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no cluster: {e}"))?;
    let ns = target
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api = kube::Api::<FileDelivery>::namespaced(client, &ns);
    let name = &target.name;
    let Some(field) = field else {
        let object = api
            .get(name)
            .await
            .map_err(|e| format!("FileDelivery {ns}/{name}: {e}"))?;
        return Ok(juki_operator::delivery_report::render(&object));
    };
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({ "spec": { field: value } })),
    )
    .await
    .map_err(|e| format!("FileDelivery {ns}/{name}: {e}"))?;
    Ok(format!("filedelivery.jukinet.io/{name} {done}\n"))
}

fn block_on(
    work: impl std::future::Future<Output = Result<String, String>>,
) -> Result<String, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(work)
}

/// Sets `hold` of one entry: a merge patch of the entries as stored, with the resourceVersion
/// read, so an edit made meanwhile makes it fail (409) instead of being overwritten.
async fn set_hold(
    schedule_name: &str,
    namespace: Option<String>,
    entry_name: &str,
    hold: bool,
) -> Result<String, String> {
    use juki_operator::api::JobSchedule;
    use kube::api::{ApiResource, DynamicObject};
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no cluster: {e}"))?;
    let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
    let resource = ApiResource::erase::<JobSchedule>(&());
    let api = kube::Api::<DynamicObject>::namespaced_with(client, &ns, &resource);
    let object = api
        .get(schedule_name)
        .await
        .map_err(|e| format!("JobSchedule {ns}/{schedule_name}: {e}"))?;
    let mut entries = object.data["spec"]["entries"].clone();
    let list = entries
        .as_array_mut()
        .ok_or("the JobSchedule has no spec.entries")?;
    let names: Vec<String> = list
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect();
    let entry = list
        .iter_mut()
        .find(|e| e["name"] == entry_name)
        .ok_or_else(|| {
            format!(
                "--entry: JobSchedule {ns}/{schedule_name} has no entry {entry_name:?} (entries: {})",
                names.join(", ")
            )
        })?;
    let what = if hold { "held" } else { "released" };
    if entry["hold"].as_bool().unwrap_or(false) == hold {
        return Ok(format!(
            "jobschedule.jukinet.io/{schedule_name} entry {entry_name} already {what}\n"
        ));
    }
    entry["hold"] = serde_json::Value::Bool(hold);
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": object.metadata.resource_version},
        "spec": {"entries": entries},
    });
    api.patch(
        schedule_name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await
    .map_err(|e| format!("patching JobSchedule {ns}/{schedule_name}: {e}"))?;
    Ok(format!(
        "jobschedule.jukinet.io/{schedule_name} entry {entry_name} {what}\n"
    ))
}

/// Creates the next attempt's Job of one run, built as the operator builds it.
async fn rerun(
    schedule_name: &str,
    namespace: Option<String>,
    node: &str,
    entry_name: &str,
    date: Date,
) -> Result<String, String> {
    use juki_operator::api::{JobSchedule, JukiNode};
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no cluster: {e}"))?;
    let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
    let object = kube::Api::<JobSchedule>::namespaced(client.clone(), &ns)
        .get(schedule_name)
        .await
        .map_err(|e| format!("JobSchedule {ns}/{schedule_name}: {e}"))?;
    let schedule = Schedule::new(&object.spec)
        .map_err(|e| format!("JobSchedule {ns}/{schedule_name} is invalid: {e}"))?;
    let entry = schedule
        .entry(entry_name)
        .map(|i| &schedule.entries[i])
        .ok_or_else(|| {
            let names: Vec<&str> = schedule.entries.iter().map(|e| e.name.as_str()).collect();
            format!("--entry: JobSchedule {ns}/{schedule_name} has no entry {entry_name:?} (entries: {})", names.join(", "))
        })?;
    let (node_ns, node_name) = node.split_once('/').unwrap_or((&ns, node));
    let object_node = kube::Api::<JukiNode>::namespaced(client.clone(), node_ns)
        .get(node_name)
        .await
        .map_err(|e| format!("--node: JukiNode {node_ns}/{node_name}: {e}"))?;
    let jobs = kube::Api::<Job>::namespaced(client.clone(), node_ns);
    let selector = format!(
        "{}={schedule_name},{}={node_name}",
        juki_operator::schedule::SCHEDULE_LABEL,
        juki_operator::resources::NODE_LABEL
    );
    let existing = jobs
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("listing the run's Jobs: {e}"))?
        .items;
    let key = juki_operator::schedule::rerun::next_attempt(
        schedule_name,
        node_ns,
        node_name,
        entry_name,
        date,
        &existing,
    )?;
    // The node's SQLite lives on its PVC when the operator made one.
    let pvc = kube::Api::<PersistentVolumeClaim>::namespaced(client.clone(), node_ns)
        .get_opt(&format!("{node_name}-data"))
        .await
        .map_err(|e| format!("reading the node's PVC: {e}"))?;
    let ctx = juki_operator::resources::Context {
        calendar_json: &serde_json::Value::Null,
        extensions_json: &serde_json::Value::Null,
        upstream_url: None,
        node_clock: None,
        delivery_keys: None,
        otlp_endpoint: None,
        sqlite_volume: if pvc.is_some() {
            juki_operator::resources::SqliteVolume::Pvc
        } else {
            juki_operator::resources::SqliteVolume::EmptyDir
        },
    };
    let job = juki_operator::schedule::job(&object_node, &ctx, schedule_name, entry, &key);
    jobs.create(&Default::default(), &job)
        .await
        .map_err(|e| format!("creating Job {node_ns}/{}: {e}", key.job_name()))?;
    Ok(format!(
        "job.batch/{} created: attempt {} of {entry_name} on {node_ns}/{node_name} for {date}\n",
        key.job_name(),
        key.attempt
    ))
}

/// One `status` report: one list each of JukiNodes, OperatingCalendars and ServiceExtensions,
/// judged at `at` (default now).
async fn status(
    client: &kube::Client,
    namespace: Option<&str>,
    at: Option<jiff::Timestamp>,
    tz: &jiff::tz::TimeZone,
    style: country::Style,
) -> Result<String, String> {
    use juki_operator::api::{JukiNode, OperatingCalendar, ServiceExtension};
    let calendars = async {
        kube::Api::<OperatingCalendar>::all(client.clone())
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .map_err(|e| format!("listing OperatingCalendars: {e}"))
    };
    let (nodes, calendars, extensions) = tokio::try_join!(
        list_all::<JukiNode>(client, namespace),
        calendars,
        list_all::<ServiceExtension>(client, namespace),
    )?;
    let now = at.unwrap_or_else(jiff::Timestamp::now);
    let rows = country::assess_all(&nodes, &calendars, &extensions, now);
    Ok(country::render(&rows, now, tz, style))
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
        Command::Rerun {
            schedule,
            namespace,
            node,
            entry,
            date,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(rerun(&schedule, namespace, &node, &entry, date))
        }
        Command::Hold {
            schedule,
            namespace,
            entry,
        } => block_on(set_hold(&schedule, namespace, &entry, true)),
        Command::Release {
            schedule,
            namespace,
            entry,
        } => block_on(set_hold(&schedule, namespace, &entry, false)),
        Command::Delivery { action } => block_on(delivery(action)),
        Command::Jobs { namespace } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let schedules = runtime.block_on(async {
                let client = kube::Client::try_default()
                    .await
                    .map_err(|e| format!("no cluster: {e}"))?;
                list_all::<juki_operator::api::JobSchedule>(&client, namespace.as_deref()).await
            })?;
            Ok(juki_operator::schedule::report::render(&schedules))
        }
        Command::Status {
            namespace,
            time_zone,
            at,
            color,
            watch,
        } => {
            let tz = jiff::tz::TimeZone::get(&time_zone)
                .map_err(|_| format!("--time-zone: {time_zone:?} is not a known IANA time zone"))?;
            let at = at
                .map(|text| preview::parse_instant(&text, &tz).map_err(|e| format!("--at: {e}")))
                .transpose()?;
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let style = country::Style {
                color: match color {
                    Color::Always => true,
                    Color::Never => false,
                    Color::Auto => terminal,
                },
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = kube::Client::try_default()
                    .await
                    .map_err(|e| format!("no cluster: {e}"))?;
                let Some(every) = watch else {
                    return status(&client, namespace.as_deref(), at, &tz, style).await;
                };
                loop {
                    let text = status(&client, namespace.as_deref(), at, &tz, style).await?;
                    // Redraw in place on a terminal; one report after another when piped.
                    if terminal {
                        print!("\x1b[2J\x1b[H{text}");
                    } else {
                        println!("{text}");
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(every)).await;
                }
            })
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

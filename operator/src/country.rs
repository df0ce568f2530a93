//! The whole country at a glance, for `kubectl juki status`: per tier and per prefecture the
//! nodes by phase, how many the calendar wants Online beside how many are, the faults now with
//! their node and since when, and the next transitions. Pure: the caller lists the JukiNodes,
//! the OperatingCalendars and the ServiceExtensions once each and passes them in; expectations
//! and faults come from [`crate::expected`], as on the operator's `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use juki_calendar::{Calendar, Tier};

use crate::api::{JukiNode, NodePhase, OperatingCalendar, OverridePhase, ServiceExtension};
use crate::expected::{Fault, Observed, Thresholds, assess, with_status};
use crate::planner::NodeView;
use crate::service_extension::evaluate;
use crate::topology::{Resolved, TopologyNode, from_jukinode, resolve};

const PHASES: [NodePhase; 7] = [
    NodePhase::Offline,
    NodePhase::Starting,
    NodePhase::Online,
    NodePhase::Draining,
    NodePhase::Stopping,
    NodePhase::DailyBatch,
    NodePhase::Failed,
];

/// One node as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub namespace: String,
    pub name: String,
    pub tier: Tier,
    pub prefecture: Option<u8>,
    pub phase: NodePhase,
    pub reason: String,
    pub expected_online: bool,
    pub expected: &'static str,
    pub faults: Vec<(Fault, Option<Timestamp>)>,
    pub next: Option<(Timestamp, NodePhase)>,
}

/// Counts of one group of nodes (a tier, a prefecture).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Counts {
    nodes: usize,
    by_phase: [usize; PHASES.len()],
    expected_online: usize,
    faulty: usize,
}

impl Counts {
    fn add(&mut self, row: &NodeRow) {
        self.nodes += 1;
        if let Some(i) = PHASES.iter().position(|p| *p == row.phase) {
            self.by_phase[i] += 1;
        }
        self.expected_online += usize::from(row.expected_online);
        self.faulty += usize::from(!row.faults.is_empty());
    }

    fn online(&self) -> usize {
        self.by_phase[2]
    }
}

/// Every node's expected phase and faults at `now`. A node whose calendar is missing or invalid
/// gets the CalendarUnavailable fault; one whose spec cannot be read is shown as it is.
pub fn assess_all(
    nodes: &[JukiNode],
    calendars: &[OperatingCalendar],
    extensions: &[ServiceExtension],
    now: Timestamp,
) -> Vec<NodeRow> {
    let compiled: HashMap<&str, Calendar> = calendars
        .iter()
        .filter_map(|c| {
            let calendar = Calendar::new(&c.spec.calendar).ok()?;
            Some((c.metadata.name.as_deref()?, calendar))
        })
        .collect();
    let mut topology: Vec<TopologyNode> = Vec::new();
    let mut ends = Vec::new();
    let mut readable = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if let Ok((t, end)) = from_jukinode(n, "default") {
            topology.push(t);
            ends.push(end);
            readable.push(i);
        }
    }
    let resolved = resolve(&topology);
    let mut children = vec![Vec::new(); topology.len()];
    for (i, r) in resolved.iter().enumerate() {
        if let Resolved::Node(up) = r {
            children[*up].push(i);
        }
    }
    // The extensions of each calendar in use, evaluated once: (date, end) per covered node.
    let mut covering: HashMap<&str, Vec<Vec<(Date, Timestamp)>>> = HashMap::new();
    for (name, calendar) in &compiled {
        let mut per_node = vec![Vec::new(); topology.len()];
        for e in extensions {
            let ns = e.metadata.namespace.as_deref().unwrap_or_default();
            let eval = evaluate(&e.spec, ns, calendar, &topology, &resolved, &ends, now);
            if let (Some(date), Some(end)) = (eval.date, eval.end) {
                for &k in &eval.covers {
                    per_node[k].push((date, end));
                }
            }
        }
        covering.insert(name, per_node);
    }
    let thresholds = Thresholds::default();
    let mut rows = Vec::with_capacity(nodes.len());
    let mut index = readable.iter().enumerate().map(|(t, &n)| (n, t));
    let mut next_readable = index.next();
    for (i, n) in nodes.iter().enumerate() {
        let t = match next_readable {
            Some((ni, t)) if ni == i => {
                next_readable = index.next();
                Some(t)
            }
            _ => None,
        };
        let status = n.status.clone().unwrap_or_default();
        let calendar = compiled.get(n.spec.calendar.as_str());
        let none = Vec::new();
        let extensions = t
            .and_then(|t| Some(&covering.get(n.spec.calendar.as_str())?[t]))
            .unwrap_or(&none);
        let view = NodeView {
            suspend: n.spec.suspend,
            replicas: n.spec.replicas,
            manual_override: n
                .spec
                .manual_override
                .as_ref()
                .map(|o| (o.phase, o.until.0)),
            pinned_below: t.and_then(|t| pinned_below(nodes, &readable, &children, t, now)),
            extensions,
            ..NodeView::bare(
                n.spec.tier,
                t.and_then(|t| topology[t].prefecture),
                t.and_then(|t| ends[t]),
            )
        };
        let view = with_status(&view, &status);
        let a = assess(calendar, &view, &Observed::of(&status), &thresholds, now);
        rows.push(NodeRow {
            namespace: n.metadata.namespace.clone().unwrap_or_default(),
            name: n.metadata.name.clone().unwrap_or_default(),
            tier: n.spec.tier,
            prefecture: view.prefecture,
            phase: view.phase,
            reason: status.reason.clone().unwrap_or_default(),
            expected_online: a.expected.is_online(),
            expected: a.expected.as_str(),
            faults: a.faults.iter().map(|f| (f.fault, f.since)).collect(),
            next: status.next_transition.as_ref().map(|x| (x.at.0, x.phase)),
        });
    }
    rows
}

/// The latest `until` of an active override Online in the subtree below topology node `t`.
fn pinned_below(
    nodes: &[JukiNode],
    readable: &[usize],
    children: &[Vec<usize>],
    t: usize,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut latest = None;
    let mut todo = children[t].clone();
    let mut seen = vec![false; children.len()];
    while let Some(k) = todo.pop() {
        if std::mem::replace(&mut seen[k], true) {
            continue;
        }
        if let Some(o) = &nodes[readable[k]].spec.manual_override
            && o.phase == OverridePhase::Online
            && o.until.0 > now
        {
            latest = latest.max(Some(o.until.0));
        }
        todo.extend_from_slice(&children[k]);
    }
    latest
}

/// How the text is dressed: ANSI colours on a terminal, plain when piped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
    fn red(self, text: &str) -> String {
        self.paint("31", text)
    }
    fn green(self, text: &str) -> String {
        self.paint("32", text)
    }
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::National => "National",
        Tier::Prefecture => "Prefecture",
        Tier::Cs => "CS",
    }
}

/// The report: a tier table, a prefecture table, the faults and the next transitions. Times in
/// `tz`.
pub fn render(rows: &[NodeRow], now: Timestamp, tz: &TimeZone, style: Style) -> String {
    let time = |t: Timestamp| {
        t.to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M")
            .to_string()
    };
    let mut out = String::new();
    let faults: usize = rows.iter().map(|r| r.faults.len()).sum();
    writeln!(
        out,
        "{}",
        style.bold(&format!(
            "jukinet at {}: {} nodes, {} expected Online, {} Online, {} faults",
            time(now),
            rows.len(),
            rows.iter().filter(|r| r.expected_online).count(),
            rows.iter().filter(|r| r.phase == NodePhase::Online).count(),
            faults
        ))
    )
    .unwrap();

    let header = |first: &str| {
        let mut h = format!(
            "{first:<10} {:>5} {:>8} {:>6}",
            "NODES", "EXPECTED", "ONLINE"
        );
        for p in PHASES {
            write!(h, " {:>10}", format!("{p:?}")).unwrap();
        }
        h.push_str("  FAULTY");
        h
    };
    let line = |label: &str, c: &Counts| {
        let mut l = format!(
            "{label:<10} {:>5} {:>8} {:>6}",
            c.nodes,
            c.expected_online,
            c.online()
        );
        for n in c.by_phase {
            write!(l, " {n:>10}").unwrap();
        }
        write!(l, "  {:>6}", c.faulty).unwrap();
        // Expected and actual differ, or something is wrong: the line stands out.
        if c.faulty > 0 {
            style.red(&l)
        } else if c.expected_online > 0 && c.online() == c.expected_online {
            style.green(&l)
        } else {
            l
        }
    };

    let mut tiers: BTreeMap<u8, (Tier, Counts)> = BTreeMap::new();
    let mut prefectures: BTreeMap<Option<u8>, Counts> = BTreeMap::new();
    for r in rows {
        tiers
            .entry(r.tier as u8)
            .or_insert_with(|| (r.tier, Counts::default()))
            .1
            .add(r);
        if r.tier != Tier::National {
            prefectures.entry(r.prefecture).or_default().add(r);
        }
    }
    writeln!(out, "\n{}", style.bold(&header("TIER"))).unwrap();
    for (tier, counts) in tiers.values() {
        writeln!(out, "{}", line(tier_name(*tier), counts)).unwrap();
    }
    if !prefectures.is_empty() {
        writeln!(out, "\n{}", style.bold(&header("PREFECTURE"))).unwrap();
        for (p, counts) in &prefectures {
            let label = p.map_or("?".to_string(), |p| format!("{p:02}"));
            writeln!(out, "{}", line(&label, counts)).unwrap();
        }
    }

    let mut found: Vec<(&NodeRow, Fault, Option<Timestamp>)> = rows
        .iter()
        .flat_map(|r| r.faults.iter().map(move |(f, s)| (r, *f, *s)))
        .collect();
    // Oldest first; the tree's top first at equal times (a prefecture explains its CSs).
    found.sort_by_key(|(r, f, s)| (*s, r.tier as u8, r.namespace.clone(), r.name.clone(), *f));
    if found.is_empty() {
        writeln!(out, "\nno faults").unwrap();
    } else {
        writeln!(
            out,
            "\n{}",
            style.bold(&format!(
                "{:<32} {:<10} {:<4} {:<19} {:<16} {:<10} {:<10} REASON",
                "NODE", "TIER", "PREF", "FAULT", "SINCE", "EXPECTED", "PHASE"
            ))
        )
        .unwrap();
        for (r, f, since) in found {
            let l = format!(
                "{:<32} {:<10} {:<4} {:<19} {:<16} {:<10} {:<10} {}",
                format!("{}/{}", r.namespace, r.name),
                tier_name(r.tier),
                r.prefecture.map_or("-".into(), |p| format!("{p:02}")),
                f.as_str(),
                since.map_or("-".into(), time),
                r.expected,
                format!("{:?}", r.phase),
                r.reason
            );
            writeln!(out, "{}", style.red(&l)).unwrap();
        }
    }

    // The next planned change of each tier: the earliest, and how many nodes make it then.
    let mut next: BTreeMap<u8, (Tier, Timestamp, NodePhase, usize)> = BTreeMap::new();
    for r in rows {
        let Some((at, phase)) = r.next.filter(|(at, _)| *at > now) else {
            continue;
        };
        let e = next.entry(r.tier as u8).or_insert((r.tier, at, phase, 0));
        if at < e.1 {
            *e = (r.tier, at, phase, 0);
        }
        if (at, phase) == (e.1, e.2) {
            e.3 += 1;
        }
    }
    if !next.is_empty() {
        writeln!(out, "\n{}", style.bold("NEXT")).unwrap();
        for (tier, at, phase, n) in next.values() {
            writeln!(
                out,
                "{:<10} {:?} at {} ({n} node{})",
                tier_name(*tier),
                phase,
                time(*at),
                if *n == 1 { "" } else { "s" }
            )
            .unwrap();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokyo(text: &str) -> Timestamp {
        format!("{text}[Asia/Tokyo]")
            .parse::<jiff::Zoned>()
            .unwrap()
            .timestamp()
    }

    fn node(ns: &str, name: &str, spec: serde_json::Value, status: serde_json::Value) -> JukiNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "JukiNode",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    fn calendar() -> OperatingCalendar {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "OperatingCalendar",
            "metadata": {"name": "japan"}, "spec": {},
        }))
        .unwrap()
    }

    /// A national node, Tokyo's prefecture with two CSs (one down), Osaka's with one CS whose
    /// calendar does not exist. Monday 2026-11-30, 12:00.
    fn country() -> Vec<JukiNode> {
        let online = |since: &str| {
            serde_json::json!({"phase": "Online", "reason": "Ready", "readyReplicas": 1,
                "phaseSince": tokyo(since).to_string(),
                "nextTransition": {"at": tokyo("2026-11-30T21:00").to_string(), "phase": "Draining"}})
        };
        vec![
            node(
                "juki-national",
                "national",
                serde_json::json!({"tier": "National"}),
                online("2026-11-30T07:00"),
            ),
            node(
                "juki-pref-13",
                "pref-13",
                serde_json::json!({"tier": "Prefecture", "prefecture": "13"}),
                online("2026-11-30T07:30"),
            ),
            node(
                "juki-pref-13",
                "cs-131016",
                serde_json::json!({"tier": "CS", "municipality": "131016"}),
                online("2026-11-30T08:01"),
            ),
            node(
                "juki-pref-13",
                "cs-131024",
                serde_json::json!({"tier": "CS", "municipality": "131024"}),
                serde_json::json!({"phase": "Failed", "reason": "ReadinessTimeout",
                    "phaseSince": tokyo("2026-11-30T08:06").to_string()}),
            ),
            node(
                "juki-pref-27",
                "cs-271004",
                serde_json::json!({"tier": "CS", "municipality": "271004", "calendar": "missing"}),
                serde_json::json!({"phase": "Failed", "reason": "CalendarUnavailable",
                    "phaseSince": tokyo("2026-11-30T06:00").to_string()}),
            ),
        ]
    }

    #[test]
    fn the_country_counts_expected_and_actual_and_lists_the_faults_with_since() {
        let tz = TimeZone::get("Asia/Tokyo").unwrap();
        let now = tokyo("2026-11-30T12:00");
        let rows = assess_all(&country(), &[calendar()], &[], now);
        let text = render(&rows, now, &tz, Style { color: false });
        let expected = "\
jukinet at 2026-11-30 12:00: 5 nodes, 4 expected Online, 3 Online, 2 faults

TIER       NODES EXPECTED ONLINE    Offline   Starting     Online   Draining   Stopping DailyBatch     Failed  FAULTY
National       1        1      1          0          0          1          0          0          0          0       0
Prefecture     1        1      1          0          0          1          0          0          0          0       0
CS             3        2      1          0          0          1          0          0          0          2       2

PREFECTURE NODES EXPECTED ONLINE    Offline   Starting     Online   Draining   Stopping DailyBatch     Failed  FAULTY
13             3        3      2          0          0          2          0          0          0          1       1
27             1        0      0          0          0          0          0          0          0          1       1

NODE                             TIER       PREF FAULT               SINCE            EXPECTED   PHASE      REASON
juki-pref-27/cs-271004           CS         27   CalendarUnavailable 2026-11-30 06:00 Unknown    Failed     CalendarUnavailable
juki-pref-13/cs-131024           CS         13   NotOnline           2026-11-30 08:06 Online     Failed     ReadinessTimeout

NEXT
National   Draining at 2026-11-30 21:00 (1 node)
Prefecture Draining at 2026-11-30 21:00 (1 node)
CS         Draining at 2026-11-30 21:00 (1 node)
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn a_planned_night_shows_no_fault_and_colour_only_when_asked() {
        let tz = TimeZone::get("Asia/Tokyo").unwrap();
        let now = tokyo("2026-11-28T12:00"); // Saturday
        let offline = serde_json::json!({"phase": "Offline", "reason": "ClosedDay",
            "phaseSince": tokyo("2026-11-27T23:00").to_string(),
            "lastBatch": {"date": "2026-11-27", "outcome": "Succeeded", "batches": []}});
        let nodes = vec![
            node(
                "juki-national",
                "national",
                serde_json::json!({"tier": "National"}),
                offline.clone(),
            ),
            node(
                "juki-pref-13",
                "cs-131016",
                serde_json::json!({"tier": "CS", "municipality": "131016"}),
                offline,
            ),
        ];
        let rows = assess_all(&nodes, &[calendar()], &[], now);
        assert!(
            rows.iter()
                .all(|r| r.faults.is_empty() && !r.expected_online)
        );
        let plain = render(&rows, now, &tz, Style { color: false });
        assert!(plain.contains("\nno faults\n"), "{plain}");
        assert!(!plain.contains('\x1b'), "{plain}");
        let coloured = render(&rows, now, &tz, Style { color: true });
        assert!(coloured.starts_with("\x1b[1mjukinet at"), "{coloured}");
    }

    #[test]
    fn the_whole_country_is_judged_and_rendered_quickly() {
        // 1 national, 47 prefectures, 1,741 CSs (37 per prefecture, 2 more in Tokyo), Online.
        let online = serde_json::json!({"phase": "Online", "reason": "Ready", "readyReplicas": 1,
            "phaseSince": tokyo("2026-11-30T08:05").to_string()});
        let mut nodes = vec![node(
            "juki-national",
            "national",
            serde_json::json!({"tier": "National"}),
            online.clone(),
        )];
        for p in 1..=47u8 {
            let ns = format!("juki-pref-{p:02}");
            nodes.push(node(
                &ns,
                &format!("pref-{p:02}"),
                serde_json::json!({"tier": "Prefecture", "prefecture": format!("{p:02}")}),
                online.clone(),
            ));
            for m in 0..(if p == 13 { 39 } else { 37 }) {
                let first5 = [p / 10, p % 10, 1, (m / 10) as u8, (m % 10) as u8];
                let code: String = first5
                    .iter()
                    .chain(&[juki_codes::municipality_check_digit(&first5)])
                    .map(|d| char::from(b'0' + d))
                    .collect();
                nodes.push(node(
                    &ns,
                    &format!("cs-{code}"),
                    serde_json::json!({"tier": "CS", "municipality": code}),
                    online.clone(),
                ));
            }
        }
        assert_eq!(nodes.len(), 1_789);
        let now = tokyo("2026-11-30T12:00");
        let started = std::time::Instant::now();
        let rows = assess_all(&nodes, &[calendar()], &[], now);
        let text = render(&rows, now, &TimeZone::UTC, Style { color: false });
        let took = started.elapsed();
        assert!(
            text.starts_with("jukinet at 2026-11-30 03:00: 1789 nodes, 1789 expected Online, 1789 Online, 0 faults"),
            "{text}"
        );
        // The target is 2 s for the whole command; this is the part that is ours, in a
        // debug build.
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        eprintln!("1,789 nodes judged and rendered in {took:?}");
    }

    #[test]
    fn an_extension_or_an_override_below_makes_nodes_expected_online() {
        let now = tokyo("2026-11-30T21:40"); // after the CS window (21:00)
        let mut nodes = country();
        nodes.truncate(3);
        let extension: ServiceExtension = serde_json::from_value(serde_json::json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "ServiceExtension",
            "metadata": {"name": "late", "namespace": "juki-pref-13"},
            "spec": {"kind": "LocalProcessing", "nodes": [{"name": "cs-131016"}],
                "date": "2026-11-30", "endTime": "22:00", "reason": "late filing"},
        }))
        .unwrap();
        let expected = |rows: &[NodeRow], name: &str| {
            rows.iter()
                .find(|r| r.name == name)
                .unwrap()
                .expected_online
        };
        let rows = assess_all(&nodes, &[calendar()], &[], now);
        assert!(!expected(&rows, "cs-131016"));
        let rows = assess_all(&nodes, &[calendar()], &[extension], now);
        assert!(expected(&rows, "cs-131016"), "{rows:?}");
        // An override Online of the CS on Saturday keeps its chain expected Online.
        let saturday = tokyo("2026-11-28T10:00");
        nodes[2].spec.manual_override = Some(crate::api::ManualOverride {
            phase: OverridePhase::Online,
            until: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(tokyo("2026-11-28T12:00")),
            reason: "maintenance".into(),
        });
        let rows = assess_all(&nodes, &[calendar()], &[], saturday);
        assert!(rows.iter().all(|r| r.expected_online), "{rows:?}");
    }
}

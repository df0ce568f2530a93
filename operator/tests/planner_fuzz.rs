//! No panic reachable from a resource's content: the planner, the calendar it reads and the
//! ServiceExtension evaluation, fed arbitrary specs, calendars and instants (years -9999 to 9999,
//! out-of-range counts, every phase and reason), always give a plan or a clear error.

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use juki_calendar::config::{PrefectureOnlineEnd, WeekdayName};
use juki_calendar::{
    BatchConfig, BatchSchedule, Calendar, CalendarConfig, ClosedDayPolicy, ClosedPeriod,
    DatedReason, Tier, TimeOfDay, WindowConfig,
};
use juki_operator::api::{ExtensionKind, NodePhase, NodeRef, OverridePhase, ServiceExtensionSpec};
use juki_operator::planner::{self, FinalAnswer, JobState, NodeView, Upstream};
use juki_operator::service_extension;
use juki_operator::topology::{TopologyNode, resolve};
use proptest::prelude::*;

/// Any instant jiff can hold, with half of the cases near today.
fn any_instant() -> impl Strategy<Value = Timestamp> {
    let (min, max) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    prop_oneof![
        (1_700_000_000i64..1_900_000_000).prop_map(|s| Timestamp::from_second(s).unwrap()),
        (min..=max).prop_map(|s| Timestamp::from_second(s).unwrap()),
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
    ]
}

/// Any civil date, with the extremes and today's years weighted in.
fn any_date() -> impl Strategy<Value = Date> {
    prop_oneof![
        (2020i16..2035, 1i8..=12, 1i8..=31),
        (-9999i16..=9999, 1i8..=12, 1i8..=31),
        Just((9999, 12, 31)),
        Just((-9999, 1, 1)),
    ]
    .prop_map(|(y, m, d)| Date::new(y, m, d.min(28)).unwrap())
}

/// Text a date field may hold: real dates of any year, and junk.
fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any_date().prop_map(|d| d.to_string()),
        prop::sample::select(vec!["9999-12-31", "9999-12-30", "-009999-01-01"])
            .prop_map(String::from),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        ".{0,12}",
    ]
}

/// Text a time field may hold: "HH:MM" of any digits, and junk.
fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u16..30, 0u16..60).prop_map(|(h, m)| format!("{h:02}:{m:02}")),
        "[0-9]{2}:[0-9]{2}",
        ".{0,6}",
    ]
}

fn any_window() -> impl Strategy<Value = WindowConfig> {
    (time_text(), time_text()).prop_map(|(start, end)| WindowConfig { start, end })
}

fn any_weekday() -> impl Strategy<Value = WeekdayName> {
    use WeekdayName::*;
    prop::sample::select(vec![
        Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
    ])
}

fn any_tier() -> impl Strategy<Value = Tier> {
    prop::sample::select(Tier::ALL.to_vec())
}

fn any_batch() -> impl Strategy<Value = BatchConfig> {
    (
        "[a-z]{1,6}",
        prop::sample::select(vec![
            BatchSchedule::Daily,
            BatchSchedule::Weekly,
            BatchSchedule::Monthly,
        ]),
        prop::option::of(any_weekday()),
        prop::option::of(any::<u8>()),
        prop::sample::select(vec![
            ClosedDayPolicy::Skip,
            ClosedDayPolicy::PreviousOpenDay,
            ClosedDayPolicy::NextOpenDay,
        ]),
        prop::collection::vec(any_tier(), 0..3),
    )
        .prop_map(
            |(name, schedule, weekday, day_of_month, closed_day_policy, tiers)| BatchConfig {
                name,
                schedule,
                weekday,
                day_of_month,
                closed_day_policy,
                tiers,
            },
        )
}

/// Calendars as an OperatingCalendar's spec may hold them; about half of them are invalid.
fn any_config() -> impl Strategy<Value = CalendarConfig> {
    let dated = || {
        prop::collection::vec(
            date_text().prop_map(|date| DatedReason {
                date,
                reason: String::new(),
            }),
            0..3,
        )
    };
    (
        prop::sample::select(vec![
            "Asia/Tokyo",
            "UTC",
            "America/New_York",
            "Pacific/Kiritimati",
            "Pacific/Pago_Pago",
            "No/Such_Zone",
        ]),
        prop::collection::vec(any_weekday(), 0..8),
        any::<bool>(),
        prop::collection::vec(
            ("[0-9]{2}-[0-9]{2}", "[0-9]{2}-[0-9]{2}").prop_map(|(from, to)| ClosedPeriod {
                name: "p".into(),
                from,
                to,
            }),
            0..3,
        ),
        dated(),
        dated(),
        prop::option::of((any_window(), any_window(), any_window())),
        prop::collection::vec(
            ("[0-9]{2}", time_text()).prop_map(|(prefecture, online_end)| PrefectureOnlineEnd {
                prefecture,
                online_end,
            }),
            0..2,
        ),
        prop::option::of(prop::collection::vec(any_batch(), 0..3)),
    )
        .prop_map(
            |(tz, weekdays, holidays, periods, closed, open, windows, ends, batches)| {
                let mut c = CalendarConfig {
                    time_zone: tz.into(),
                    closed_weekdays: weekdays,
                    national_holidays: holidays,
                    closed_periods: periods,
                    extra_closed_dates: closed,
                    extra_open_dates: open,
                    prefecture_online_ends: ends,
                    ..CalendarConfig::default()
                };
                if let Some((national, prefecture, cs)) = windows {
                    c.online_windows.national = national;
                    c.online_windows.prefecture = prefecture;
                    c.online_windows.cs = cs;
                }
                if let Some(batches) = batches {
                    c.batches = batches;
                }
                c
            },
        )
}

/// A valid calendar open every day of every year, up to 9999-12-31.
fn open_every_day() -> CalendarConfig {
    CalendarConfig {
        closed_weekdays: Vec::new(),
        national_holidays: false,
        closed_periods: Vec::new(),
        ..CalendarConfig::default()
    }
}

/// The default calendar, one open every day, or any valid generated one.
fn any_calendar() -> impl Strategy<Value = Calendar> {
    prop_oneof![
        Just(CalendarConfig::default()),
        Just(open_every_day()),
        any_config(),
    ]
    .prop_map(|c| {
        Calendar::new(&c).unwrap_or_else(|_| Calendar::new(&CalendarConfig::default()).unwrap())
    })
}

fn any_phase() -> impl Strategy<Value = NodePhase> {
    use NodePhase::*;
    prop::sample::select(vec![
        Offline, Starting, Online, Draining, Stopping, DailyBatch, Failed,
    ])
}

fn any_duration() -> impl Strategy<Value = SignedDuration> {
    prop_oneof![
        (0i64..86_400).prop_map(SignedDuration::from_secs),
        any::<i64>().prop_map(SignedDuration::from_secs),
    ]
}

/// The owned facts of a NodeView (the view borrows its lists).
#[derive(Debug, Clone)]
struct Facts {
    tier: Tier,
    prefecture: Option<u8>,
    online_end: Option<TimeOfDay>,
    counts: (i32, i32, i32),
    suspend: bool,
    manual_override: Option<(bool, Timestamp)>,
    extensions: Vec<(Date, Timestamp)>,
    phase: NodePhase,
    phase_since: Option<Timestamp>,
    reason: Option<planner::Reason>,
    pods: i32,
    upstream: Upstream,
    downstream_offline: bool,
    final_answer: u8,
    jobs: Vec<(String, Date, JobState)>,
    last_batch_date: Option<Date>,
    durations: (SignedDuration, SignedDuration),
    /// Held by a scheduled run, held by a required delivery.
    holds: (bool, bool),
}

fn any_facts() -> impl Strategy<Value = Facts> {
    let count = || prop_oneof![0i32..4, any::<i32>()];
    let upstream = prop_oneof![
        Just(Upstream::NotNeeded),
        Just(Upstream::Missing),
        Just(Upstream::Ambiguous),
        any_phase().prop_map(Upstream::Phase),
    ];
    let job_state = prop::sample::select(vec![
        JobState::Absent,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
    ]);
    (
        (
            any_tier(),
            prop::option::of(any::<u8>()),
            prop::option::of((0u16..30, 0u16..60).prop_map(|(h, m)| TimeOfDay::hm(h, m).unwrap())),
            (count(), count()),
            any::<bool>(),
            prop::option::of((any::<bool>(), any_instant())),
            prop::collection::vec((any_date(), any_instant()), 0..3),
        ),
        (
            any_phase(),
            prop::option::of(any_instant()),
            prop::option::of(prop::sample::select(planner::Reason::ALL)),
            count(),
            upstream,
            any::<bool>(),
            0u8..3,
            prop::collection::vec(
                (
                    prop::sample::select(vec!["statistics", "backup", "x"]).prop_map(String::from),
                    any_date(),
                    job_state,
                ),
                0..3,
            ),
            prop::option::of(any_date()),
            (any_duration(), any_duration()),
        ),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(|(a, b, holds)| Facts {
            tier: a.0,
            prefecture: a.1,
            online_end: a.2,
            counts: (a.3.0, a.3.1, 0),
            suspend: a.4,
            manual_override: a.5,
            extensions: a.6,
            phase: b.0,
            phase_since: b.1,
            reason: b.2,
            pods: b.3,
            upstream: b.4,
            downstream_offline: b.5,
            final_answer: b.6,
            jobs: b.7,
            last_batch_date: b.8,
            durations: b.9,
            holds,
        })
}

fn view(f: &Facts) -> NodeView<'_> {
    NodeView {
        tier: f.tier,
        prefecture: f.prefecture,
        online_end: f.online_end,
        replicas: f.counts.0,
        suspend: f.suspend,
        manual_override: f.manual_override.map(|(online, until)| {
            let phase = if online {
                OverridePhase::Online
            } else {
                OverridePhase::Offline
            };
            (phase, until)
        }),
        pinned_below: f.phase_since,
        extensions: &f.extensions,
        held: f.holds.0.then_some("a scheduled run holds its start"),
        delivery_held: f
            .holds
            .1
            .then_some("delivery juki-national/codes is required"),
        phase: f.phase,
        phase_since: f.phase_since,
        reason: f.reason,
        ready_replicas: f.counts.1,
        pods: f.pods,
        upstream: f.upstream,
        downstream_offline: f.downstream_offline,
        final_answer: match f.final_answer {
            0 => FinalAnswer::NotRequested,
            1 => FinalAnswer::Done,
            _ => FinalAnswer::Failed("refused".into()),
        },
        jobs: &f.jobs,
        last_batch_date: f.last_batch_date,
        readiness_timeout: f.durations.0,
        waiting_grace: f.durations.1,
    }
}

fn topology() -> Vec<TopologyNode> {
    let n = |ns: &str, name: &str, tier, p| TopologyNode {
        namespace: ns.into(),
        name: name.into(),
        tier,
        prefecture: p,
        upstream: None,
        tls: false,
    };
    vec![
        n("nat", "national", Tier::National, None),
        n("p13", "pref-13", Tier::Prefecture, Some(13)),
        n("p13", "cs-131016", Tier::Cs, Some(13)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// A calendar either compiles or names each mistake; a compiled one answers every query for
    /// any instant and any date without panicking.
    #[test]
    fn any_calendar_spec_compiles_or_names_its_errors(config in any_config(), at in any_instant(), date in any_date()) {
        let cal = match Calendar::new(&config) {
            Ok(cal) => cal,
            Err(errors) => {
                prop_assert!(!errors.to_string().is_empty());
                return Ok(());
            }
        };
        let _ = cal.day_status(date).to_string();
        let _ = cal.next_open_day(date, 400);
        for tier in Tier::ALL {
            let _ = cal.online_window(tier, Some(13), date);
            let _ = cal.online_window_at(tier, Some(13), at);
            let _ = cal.batch_runs_for(tier, date);
        }
        let _ = cal.window_service(date);
        let _ = cal.in_window_service(at);
        let scopes = [juki_calendar::Scope::Online(Tier::National, None), juki_calendar::Scope::WindowService];
        let _ = cal.next_transition(at, &scopes);
        let _ = cal.transitions(at, at.checked_add(SignedDuration::from_hours(24 * 10)).unwrap_or(Timestamp::MAX), &scopes).take(50).count();
    }

    /// The planner gives a plan for any node, calendar and instant.
    #[test]
    fn the_planner_always_plans(cal in any_calendar(), facts in any_facts(), now in any_instant()) {
        let v = view(&facts);
        let p = planner::plan(&cal, &v, now);
        // Its reason is one status can carry and the operator reads back.
        prop_assert_eq!(p.reason.as_str().parse::<planner::Reason>(), Ok(p.reason));
        let _ = planner::check_online_end(&cal, facts.tier, facts.online_end);
        // A node a required delivery holds back never goes Online from a start (a Draining
        // node whose window reopens never stopped: it has not started since).
        if facts.holds.1 && matches!(facts.phase, NodePhase::Offline | NodePhase::Starting) {
            prop_assert_ne!(p.phase, NodePhase::Online, "{:?}", p);
        }
    }

    /// A ServiceExtension of any date and end time is evaluated or rejected with a reason.
    #[test]
    fn any_service_extension_is_evaluated_or_rejected(
        cal in any_calendar(),
        date in date_text(),
        end_time in time_text(),
        name in prop::sample::select(vec!["cs-131016", "pref-13", "national", "nope"]),
        now in any_instant(),
    ) {
        let nodes = topology();
        let resolved = resolve(&nodes);
        let ends = vec![None; nodes.len()];
        let spec = ServiceExtensionSpec {
            kind: ExtensionKind::LocalProcessing,
            nodes: vec![NodeRef { name: name.into(), namespace: None }],
            date,
            end_time,
            coordinated_with: Vec::new(),
            reason: String::new(),
        };
        let e = service_extension::evaluate(&spec, "p13", &cal, &nodes, &resolved, &ends, now);
        prop_assert!(!e.reason.is_empty() && !e.message.is_empty());
    }
}

/// The case of issue 18: a ServiceExtension dated 9999-12-31, an open day of a calendar without
/// the year-end closure, made `Calendar::instant` panic (its 23:00 in Tokyo is past jiff's last
/// instant).
#[test]
fn an_extension_dated_9999_12_31_is_rejected_not_a_panic() {
    let cal = Calendar::new(&open_every_day()).unwrap();
    assert!(cal.is_open(Date::new(9999, 12, 31).unwrap()));
    let nodes = topology();
    let resolved = resolve(&nodes);
    let ends = vec![None; nodes.len()];
    let spec = ServiceExtensionSpec {
        kind: ExtensionKind::LocalProcessing,
        nodes: vec![NodeRef {
            name: "cs-131016".into(),
            namespace: None,
        }],
        date: "9999-12-31".into(),
        end_time: "23:00".into(),
        coordinated_with: Vec::new(),
        reason: String::new(),
    };
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let e = service_extension::evaluate(&spec, "p13", &cal, &nodes, &resolved, &ends, now);
    assert_eq!(e.phase, juki_operator::api::ExtensionPhase::Rejected);
    assert!(e.message.contains("spec.date"), "{}", e.message);
    // And a node carrying such an extension still gets a plan.
    let extensions = [(Date::new(9999, 12, 31).unwrap(), Timestamp::MAX)];
    let mut v = NodeView::bare(Tier::Cs, Some(13), None);
    v.extensions = &extensions;
    let _ = planner::plan(&cal, &v, now);
}

//! Validation messages and the calendar's invariants over generated calendars.

use jiff::civil::{Date, date};
use jiff::{Timestamp, ToSpan};
use juki_calendar::{
    BatchConfig, BatchSchedule, Calendar, CalendarConfig, ClosedPeriod, DatedReason, Scope, Tier,
    TransitionKind, WindowConfig, config::PrefectureOnlineEnd,
};
use proptest::prelude::*;

fn errors_of(config: &CalendarConfig) -> Vec<String> {
    Calendar::new(config)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn window(start: &str, end: &str) -> WindowConfig {
    WindowConfig {
        start: start.into(),
        end: end.into(),
    }
}

#[test]
fn an_unknown_time_zone_is_named() {
    let config = CalendarConfig {
        time_zone: "Asia/Tokio".into(),
        ..CalendarConfig::default()
    };
    assert_eq!(
        errors_of(&config),
        [r#"timeZone: "Asia/Tokio" is not a known IANA time zone"#]
    );
}

#[test]
fn malformed_times_and_dates_name_their_field() {
    let mut config = CalendarConfig::default();
    config.online_windows.cs = window("8:00", "21:00");
    config.window_service = window("09:00", "30:00");
    config.extra_closed_dates = vec![DatedReason {
        date: "2026-02-30".into(),
        reason: String::new(),
    }];
    config.closed_periods.push(ClosedPeriod {
        name: "obon".into(),
        from: "08-13".into(),
        to: "8-15".into(),
    });
    assert_eq!(
        errors_of(&config),
        [
            r#"closedPeriods[1].to: "8-15" is not a real month-day of the form MM-DD"#,
            r#"extraClosedDates[0].date: "2026-02-30" is not a real date of the form YYYY-MM-DD"#,
            r#"onlineWindows.cs.start: "8:00" is not a time of the form HH:MM"#,
            r#"windowService.end: "30:00" is out of range (00:00 to 29:59)"#,
        ]
    );
}

#[test]
fn reversed_and_overlapping_ranges_are_refused() {
    let mut config = CalendarConfig::default();
    config.online_windows.national = window("22:00", "07:00");
    config.closed_periods.push(ClosedPeriod {
        name: "new year".into(),
        from: "01-02".into(),
        to: "01-05".into(),
    });
    config.extra_open_dates = vec![DatedReason {
        date: "2026-11-30".into(),
        reason: "catch-up".into(),
    }];
    config.extra_closed_dates = vec![DatedReason {
        date: "2026-11-30".into(),
        reason: "power work".into(),
    }];
    assert_eq!(
        errors_of(&config),
        [
            "closedPeriods[1]: overlaps closedPeriods[0]",
            "extraOpenDates[0].date: 2026-11-30 is also in extraClosedDates",
            "onlineWindows.national.end: 07:00 is not after start 22:00",
        ]
    );
}

#[test]
fn windows_that_break_the_dependency_order_are_refused() {
    let mut config = CalendarConfig::default();
    config.online_windows.prefecture = window("08:30", "21:30"); // opens after the CSs (08:00)
    config.prefecture_online_ends = vec![PrefectureOnlineEnd {
        prefecture: "13".into(),
        online_end: "23:00".into(),
    }]; // after national 22:00
    let errors = errors_of(&config);
    assert!(errors.contains(&"onlineWindows.prefecture.start: 08:30 opens after onlineWindows.cs (08:00); a tier must open no later than the tiers below it".to_string()), "{errors:?}");
    assert!(errors.contains(&"onlineWindows.national.end: 22:00 closes before prefectureOnlineEnds[0] (23:00); a tier must close no earlier than the tiers below it".to_string()), "{errors:?}");
}

#[test]
fn batch_definitions_are_checked() {
    let config = CalendarConfig {
        batches: vec![
            BatchConfig::daily("statistics"),
            BatchConfig::daily("statistics"),
            BatchConfig {
                schedule: BatchSchedule::Weekly,
                ..BatchConfig::daily("weekly")
            },
            BatchConfig {
                schedule: BatchSchedule::Monthly,
                day_of_month: Some(32),
                ..BatchConfig::daily("monthly")
            },
            BatchConfig::daily("Bad_Name"),
        ],
        ..CalendarConfig::default()
    };
    assert_eq!(
        errors_of(&config),
        [
            r#"batches[1].name: "statistics" is used by an earlier batch"#,
            "batches[2].weekday: required when schedule is Weekly",
            "batches[3].dayOfMonth: 32 is outside 1–31",
            r#"batches[4].name: "Bad_Name" must be 1–20 lowercase letters, digits or '-', starting with a letter"#,
        ]
    );
}

#[test]
fn the_examples_calendar_manifest_is_valid() {
    let text = include_str!("../../examples/calendar.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    let spec = serde_json::to_value(&doc["spec"]).unwrap();
    let config: CalendarConfig = serde_json::from_value(spec).unwrap();
    let cal = Calendar::new(&config).unwrap();
    assert!(!cal.is_open(date(2026, 12, 31)));
}

// ---- properties over generated calendars ----

fn hm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

prop_compose! {
    /// Windows that mostly nest (starts ascending, ends descending down the tiers), with a random
    /// slip that breaks nesting in some cases, plus a per-prefecture end, a closed weekday and a
    /// closed period. Invalid ones are refused by `Calendar::new` and skipped by the properties.
    fn any_config()(
        mut starts in prop::array::uniform3(0u16..(24 * 60)),
        cs_length in 1u16..(20 * 60),
        extras in prop::array::uniform3(0u16..180),
        slip in prop::option::weighted(0.2, -120i32..120),
        closed_weekday in 0usize..7,
        period in (1i8..=12, 1i8..=28, 0i32..20),
    ) -> CalendarConfig {
        starts.sort_unstable();
        let cs_end = starts[2] + cs_length;
        let pref_end = cs_end + extras[0];
        let nat_end = pref_end + extras[1] + extras[2];
        let clip = |m: i32| hm(m.clamp(0, 30 * 60 - 1) as u16);
        let mut config = CalendarConfig::default();
        config.online_windows.national = window(&hm(starts[0]), &clip(i32::from(nat_end) + slip.unwrap_or(0)));
        config.online_windows.prefecture = window(&hm(starts[1]), &clip(i32::from(pref_end)));
        config.online_windows.cs = window(&hm(starts[2]), &clip(i32::from(cs_end)));
        config.window_service = window(&hm(starts[2]), &clip(i32::from(cs_end)));
        config.prefecture_online_ends = vec![PrefectureOnlineEnd { prefecture: "27".into(), online_end: clip(i32::from(pref_end + extras[1])) }];
        use juki_calendar::config::WeekdayName::*;
        config.closed_weekdays = vec![[Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday][closed_weekday]];
        let from = Date::new(2000, period.0, period.1).unwrap();
        let to = from.checked_add(period.2.days()).unwrap();
        config.closed_periods.push(ClosedPeriod {
            name: "generated".into(),
            from: from.strftime("%m-%d").to_string(),
            to: to.strftime("%m-%d").to_string(),
        });
        config
    }
}

fn any_instant() -> impl Strategy<Value = Timestamp> {
    // 2020-01-01 to 2030-01-01, at minute resolution.
    (0i64..(10 * 366 * 24 * 60))
        .prop_map(|m| Timestamp::from_second(1_577_804_400 + m * 60).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whenever a tier is online, the tier above it is online too.
    #[test]
    fn nesting_holds_for_every_valid_calendar(config in any_config(), at in any_instant()) {
        let Ok(cal) = Calendar::new(&config) else { return Ok(()) };
        for pref in [None, Some(27)] {
            if cal.in_online_window(Tier::Cs, None, at) {
                prop_assert!(cal.in_online_window(Tier::Prefecture, pref, at));
            }
            if cal.in_online_window(Tier::Prefecture, pref, at) {
                prop_assert!(cal.in_online_window(Tier::National, None, at));
            }
        }
    }

    /// No day inside a closed period is open (unless listed as an extra open date: none here).
    #[test]
    fn no_open_day_inside_a_closed_period(config in any_config(), year in 1990i16..2100) {
        let Ok(cal) = Calendar::new(&config) else { return Ok(()) };
        let p = config.closed_periods.last().unwrap();
        let (from, to) = (p.from.as_str(), p.to.as_str());
        let mut day = date(year, 1, 1);
        while day.year() == year {
            let md = day.strftime("%m-%d").to_string();
            let inside = if from <= to { from <= md.as_str() && md.as_str() <= to } else { from <= md.as_str() || md.as_str() <= to };
            if inside {
                prop_assert!(!cal.is_open(day), "{day} is inside {from}..{to}");
            }
            day = day.tomorrow().unwrap();
        }
    }

    /// Transitions come in time order, opens and closes alternate per scope, and each one really
    /// changes the window state it reports.
    #[test]
    fn transitions_are_strictly_ordered_and_real(config in any_config(), at in any_instant()) {
        let Ok(cal) = Calendar::new(&config) else { return Ok(()) };
        let scopes = [Scope::Online(Tier::National, None), Scope::Online(Tier::Prefecture, Some(27)), Scope::Online(Tier::Cs, None), Scope::WindowService];
        let until = at.checked_add((21 * 24).hours()).unwrap();
        let all: Vec<_> = cal.transitions(at, until, &scopes).collect();
        for pair in all.windows(2) {
            prop_assert!(pair[0].at <= pair[1].at);
            prop_assert!(pair[0] != pair[1]);
        }
        for scope in scopes {
            let mine: Vec<_> = all.iter().filter(|t| t.scope == scope).collect();
            for pair in mine.windows(2) {
                prop_assert_ne!(pair[0].kind, pair[1].kind, "{:?} twice in a row", pair[0].kind);
            }
            for t in mine {
                let inside = |ts: Timestamp| match scope {
                    Scope::Online(tier, p) => cal.in_online_window(tier, p, ts),
                    Scope::WindowService => cal.in_window_service(ts),
                };
                let before = inside(t.at.checked_sub(1.second()).unwrap());
                prop_assert_eq!(inside(t.at), t.kind == TransitionKind::Open);
                prop_assert_eq!(before, t.kind == TransitionKind::Close);
            }
        }
        if let Some(first) = all.first() {
            prop_assert_eq!(cal.next_transition(at.checked_sub(1.nanosecond()).unwrap(), &scopes), Some(*first));
        }
    }
}

#[test]
fn a_window_of_a_whole_day_is_refused() {
    let mut config = CalendarConfig::default();
    config.online_windows.national = window("02:39", "26:39");
    assert_eq!(
        errors_of(&config),
        [
            "onlineWindows.national.end: 26:39 is 24 hours or more after start 02:39; a window must close before the next one opens"
        ]
    );
}

//! The kubectl-juki binary as a user runs it: output on stdout, clear errors and exit codes.

use std::process::{Command, Output};

fn juki(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-juki"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn holidays_prints_one_line_per_holiday() {
    let out = juki(&["holidays", "2019"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 22, "{text}");
    assert!(text.contains("2019-05-01,天皇の即位の日\n"));
    let en = stdout(&juki(&["holidays", "2020", "2021", "--lang", "en"]));
    assert!(
        en.contains("2020-07-24,Sports Day\n") && en.contains("2021-08-09,Substitute Holiday\n"),
        "{en}"
    );
}

#[test]
fn holidays_refuses_years_before_the_law() {
    let out = juki(&["holidays", "1900"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1948 <= FROM_YEAR <= TO_YEAR"));
}

#[test]
fn calendar_previews_the_example_manifest() {
    let out = juki(&[
        "calendar",
        "../examples/calendar.yaml",
        "--from",
        "2026-12-28",
        "--days",
        "8",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let first_words: Vec<String> = text
        .lines()
        .map(|l| l.split("  ").next().unwrap().to_string())
        .collect();
    assert_eq!(
        first_words,
        [
            "2026-12-28 Mon open",
            "2026-12-29 Tue closed: year-end closure",
            "2026-12-30 Wed closed: year-end closure",
            "2026-12-31 Thu closed: year-end closure",
            "2027-01-01 Fri closed: 元日 (New Year's Day), year-end closure",
            "2027-01-02 Sat closed: Saturday, year-end closure",
            "2027-01-03 Sun closed: Sunday, year-end closure",
            "2027-01-04 Mon open",
        ]
    );
}

#[test]
fn calendar_names_a_missing_file_and_a_bad_date() {
    let out = juki(&["calendar", "no-such.yaml", "--from", "2026-01-01"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such.yaml: No such file"));
    let out = juki(&[
        "calendar",
        "../examples/calendar.yaml",
        "--from",
        "2026-02-30",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));
}

#[test]
fn plan_forecasts_a_weekday_in_dependency_order() {
    let out = juki(&[
        "plan",
        "--calendar",
        "../examples/calendar.yaml",
        "--topology",
        "../examples/topology.yaml",
        "--from",
        "2026-11-30",
        "--days",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        "2026-11-30 Mon 07:00  juki-national/national       Offline → Starting (WindowOpen)"
    );
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("2026-11-30 Mon 22:00  juki-national/national")
            && last.ends_with("DailyBatch → Offline (BatchSucceeded)"),
        "{last}"
    );
    // 7 nodes × 6 phase changes (Starting … Offline) and 7 × 2 batch lines.
    assert_eq!(text.lines().count(), 7 * 6 + 7 * 2, "{text}");
}

#[test]
fn plan_over_a_weekend_is_empty_and_a_bad_instant_is_named() {
    let out = juki(&[
        "plan",
        "--calendar",
        "../examples/calendar.yaml",
        "--topology",
        "../examples/topology.yaml",
        "--from",
        "2026-11-28T00:00",
        "--days",
        "2",
    ]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    let out = juki(&[
        "plan",
        "--calendar",
        "../examples/calendar.yaml",
        "--topology",
        "../examples/topology.yaml",
        "--from",
        "monday",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--from: \"monday\" is not an RFC 3339 instant")
    );
}

#[test]
fn status_refuses_a_bad_time_zone_or_instant_before_calling_a_cluster() {
    let out = juki(&["status", "--time-zone", "Nowhere/Zone"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a known IANA time zone"), "{err}");
    let out = juki(&["status", "--at", "yesterday-ish"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("kubectl juki: --at:"), "{err}");
}

#[test]
fn plan_with_a_schedule_lists_its_runs_in_tree_order_and_each_nights_deadline() {
    // Friday 2026-11-27 to Tuesday: the weekend backup (Friday), the month-end statistics and
    // report (Monday the 30th), the pre-start checks of every prefecture.
    let out = juki(&[
        "plan",
        "--calendar",
        "../examples/calendar.yaml",
        "--topology",
        "../examples/topology.yaml",
        "--schedule",
        "../examples/jobschedule.yaml",
        "--from",
        "2026-11-27T12:00",
        "--days",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let schedule = &text[text.find("JobSchedule nightly").expect(&text)..];
    assert!(
        schedule.contains(
            "operating day 2026-11-27 Fri: 7 runs, done by 2026-11-30 Mon 07:00 (juki-national/national starts)"
        ),
        "{schedule}"
    );
    let position = |needle: &str| {
        schedule
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in {schedule}"))
    };
    // Every CS before its prefecture, every prefecture before the national server.
    assert!(
        position("cs-131016-weekend-backup-20261127") < position("pref-13-weekend-backup-20261127")
    );
    assert!(
        position("cs-272051-weekend-backup-20261127") < position("pref-27-weekend-backup-20261127")
    );
    assert!(
        position("pref-27-weekend-backup-20261127") < position("national-weekend-backup-20261127")
    );
    assert!(
        position("pref-13-month-end-stats-20261130")
            < position("national-month-end-report-20261130")
    );
    assert!(schedule.contains("pref-13-prestart-check-20261130"));
}

#[test]
fn plan_refuses_a_schedule_with_a_cycle_naming_the_field() {
    let out = juki(&[
        "plan",
        "--calendar",
        "../examples/calendar.yaml",
        "--topology",
        "../examples/topology.yaml",
        "--schedule",
        "../examples/invalid/jobschedule-cycle.yaml",
        "--from",
        "2026-11-27",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("JobSchedule \"cycle\": spec.entries[0].after: dependency cycle on the same node: export → compress → export"),
        "{stderr}"
    );
}

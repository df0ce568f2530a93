//! Japanese national holidays checked against the Cabinet Office (内閣府)
//! lists, plus property tests over 1948–2150.

use jiff::ToSpan;
use jiff::civil::{Date, Weekday, date};
use juki_calendar::holidays::{
    FIRST_DATE, Holiday, HolidayKind, holiday_on, holidays_between, holidays_in_year,
};
use proptest::prelude::*;

use HolidayKind::{Citizens as C, National as N, OneOff as O, Substitute as S};

/// Compares a full year with a literal list of (month, day, 日本語名, kind).
fn assert_year(year: i16, expected: &[(i8, i8, &str, HolidayKind)]) {
    let actual: Vec<(Date, &str, HolidayKind)> = holidays_in_year(year)
        .into_iter()
        .map(|(d, h)| (d, h.name_ja, h.kind))
        .collect();
    let expected: Vec<(Date, &str, HolidayKind)> = expected
        .iter()
        .map(|&(m, d, name, kind)| (date(year, m, d), name, kind))
        .collect();
    assert_eq!(actual, expected, "holidays of {year}");
}

fn is_holiday(d: Date) -> bool {
    holiday_on(d).is_some()
}

fn is_national(d: Date) -> bool {
    matches!(
        holiday_on(d).map(|h| h.kind),
        Some(HolidayKind::National | HolidayKind::OneOff)
    )
}

#[test]
fn year_1948_starts_on_july_20() {
    assert_year(
        1948,
        &[
            (9, 23, "秋分の日", N),
            (11, 3, "文化の日", N),
            (11, 23, "勤労感謝の日", N),
        ],
    );
    assert_eq!(FIRST_DATE, date(1948, 7, 20));
    assert!(holidays_in_year(1947).is_empty());
    assert!(holidays_in_year(1900).is_empty());
    assert_eq!(holiday_on(date(1948, 5, 5)), None);
    assert_eq!(holiday_on(date(1948, 1, 1)), None);
}

#[test]
fn year_1959_crown_prince_wedding() {
    assert_eq!(
        holiday_on(date(1959, 4, 10)),
        Some(Holiday {
            name_ja: "皇太子明仁親王の結婚の儀",
            name_en: "Wedding Ceremony of Crown Prince Akihito",
            kind: O,
        })
    );
}

#[test]
fn year_1973_first_substitute_holiday() {
    // The 1973 amendment took effect 1973-04-12: 2/11 (Sunday) got no
    // substitute, 4/29 (Sunday) gave the first one on 4/30.
    assert_year(
        1973,
        &[
            (1, 1, "元日", N),
            (1, 15, "成人の日", N),
            (2, 11, "建国記念の日", N),
            (3, 21, "春分の日", N),
            (4, 29, "天皇誕生日", N),
            (4, 30, "振替休日", S),
            (5, 3, "憲法記念日", N),
            (5, 5, "こどもの日", N),
            (9, 15, "敬老の日", N),
            (9, 23, "秋分の日", N),
            (9, 24, "振替休日", S),
            (10, 10, "体育の日", N),
            (11, 3, "文化の日", N),
            (11, 23, "勤労感謝の日", N),
        ],
    );
}

#[test]
fn year_1988_last_showa_year() {
    assert_year(
        1988,
        &[
            (1, 1, "元日", N),
            (1, 15, "成人の日", N),
            (2, 11, "建国記念の日", N),
            (3, 20, "春分の日", N),
            (3, 21, "振替休日", S),
            (4, 29, "天皇誕生日", N),
            (5, 3, "憲法記念日", N),
            (5, 4, "国民の休日", C),
            (5, 5, "こどもの日", N),
            (9, 15, "敬老の日", N),
            (9, 23, "秋分の日", N),
            (10, 10, "体育の日", N),
            (11, 3, "文化の日", N),
            (11, 23, "勤労感謝の日", N),
        ],
    );
}

#[test]
fn year_1989_funeral_and_birthday_move() {
    assert_year(
        1989,
        &[
            (1, 1, "元日", N),
            (1, 2, "振替休日", S),
            (1, 15, "成人の日", N),
            (1, 16, "振替休日", S),
            (2, 11, "建国記念の日", N),
            (2, 24, "昭和天皇の大喪の礼", O),
            (3, 21, "春分の日", N),
            (4, 29, "みどりの日", N),
            (5, 3, "憲法記念日", N),
            (5, 4, "国民の休日", C),
            (5, 5, "こどもの日", N),
            (9, 15, "敬老の日", N),
            (9, 23, "秋分の日", N),
            (10, 10, "体育の日", N),
            (11, 3, "文化の日", N),
            (11, 23, "勤労感謝の日", N),
            (12, 23, "天皇誕生日", N),
        ],
    );
}

#[test]
fn one_offs_of_1990_and_1993() {
    assert_eq!(
        holiday_on(date(1990, 11, 12)).map(|h| (h.name_ja, h.kind)),
        Some(("即位礼正殿の儀", O))
    );
    assert_eq!(
        holiday_on(date(1993, 6, 9)).map(|h| (h.name_ja, h.kind)),
        Some(("皇太子徳仁親王の結婚の儀", O))
    );
}

#[test]
fn may_4th_1986_to_2006() {
    // Until 2006 May 4 was not a national holiday: a citizens' holiday
    // (from 1985-12-27) unless Sunday, or a substitute holiday when it was
    // the Monday after a Sunday May 3.
    let expected = [
        (1986, None), // Sunday
        (1987, Some(S)),
        (1988, Some(C)),
        (1989, Some(C)),
        (1990, Some(C)),
        (1991, Some(C)), // Saturday
        (1992, Some(S)),
        (1993, Some(C)),
        (1994, Some(C)),
        (1995, Some(C)),
        (1996, Some(C)), // Saturday
        (1997, None),    // Sunday
        (1998, Some(S)),
        (1999, Some(C)),
        (2000, Some(C)),
        (2001, Some(C)),
        (2002, Some(C)), // Saturday
        (2003, None),    // Sunday
        (2004, Some(C)),
        (2005, Some(C)),
        (2006, Some(C)),
    ];
    for (year, kind) in expected {
        assert_eq!(holiday_on(date(year, 5, 4)).map(|h| h.kind), kind, "{year}");
    }
    // Before the 1985 amendment May 4 was an ordinary day.
    assert_eq!(holiday_on(date(1984, 5, 4)), None);
    assert_eq!(holiday_on(date(1985, 5, 4)), None);
    // From 2007 it is みどりの日.
    assert_eq!(
        holiday_on(date(2007, 5, 4)).map(|h| h.name_ja),
        Some("みどりの日")
    );
}

#[test]
fn happy_monday_switches() {
    assert_eq!(
        holiday_on(date(1999, 1, 15)).map(|h| h.name_ja),
        Some("成人の日")
    );
    assert_eq!(holiday_on(date(2000, 1, 15)), None);
    assert_eq!(
        holiday_on(date(2000, 1, 10)).map(|h| h.name_ja),
        Some("成人の日")
    );
    assert_eq!(
        holiday_on(date(1999, 10, 11)).map(|h| h.name_ja),
        Some("振替休日")
    );
    assert_eq!(
        holiday_on(date(2000, 10, 9)).map(|h| h.name_ja),
        Some("体育の日")
    );
    assert_eq!(
        holiday_on(date(2002, 7, 20)).map(|h| h.name_ja),
        Some("海の日")
    );
    assert_eq!(
        holiday_on(date(2002, 9, 15)).map(|h| h.name_ja),
        Some("敬老の日")
    );
    assert_eq!(
        holiday_on(date(2002, 9, 16)).map(|h| h.name_ja),
        Some("振替休日")
    );
    assert_eq!(
        holiday_on(date(2003, 7, 21)).map(|h| h.name_ja),
        Some("海の日")
    );
    assert_eq!(
        holiday_on(date(2003, 9, 15)).map(|h| h.name_ja),
        Some("敬老の日")
    );
    assert_eq!(holiday_on(date(1995, 7, 20)), None);
    assert_eq!(
        holiday_on(date(1996, 7, 20)).map(|h| h.name_ja),
        Some("海の日")
    );
    assert_eq!(
        holiday_on(date(1966, 9, 15)).map(|h| h.name_ja),
        Some("敬老の日")
    );
    assert_eq!(
        holiday_on(date(1966, 10, 10)).map(|h| h.name_ja),
        Some("体育の日")
    );
    assert_eq!(holiday_on(date(1965, 10, 10)), None);
    assert_eq!(holiday_on(date(1966, 2, 11)), None);
    assert_eq!(
        holiday_on(date(1967, 2, 11)).map(|h| h.name_ja),
        Some("建国記念の日")
    );
    assert_eq!(holiday_on(date(2015, 8, 11)), None);
    assert_eq!(
        holiday_on(date(2016, 8, 11)).map(|h| h.name_ja),
        Some("山の日")
    );
}

#[test]
fn year_2007_showa_day_and_new_substitute_rule() {
    assert_year(
        2007,
        &[
            (1, 1, "元日", N),
            (1, 8, "成人の日", N),
            (2, 11, "建国記念の日", N),
            (2, 12, "振替休日", S),
            (3, 21, "春分の日", N),
            (4, 29, "昭和の日", N),
            (4, 30, "振替休日", S),
            (5, 3, "憲法記念日", N),
            (5, 4, "みどりの日", N),
            (5, 5, "こどもの日", N),
            (7, 16, "海の日", N),
            (9, 17, "敬老の日", N),
            (9, 23, "秋分の日", N),
            (9, 24, "振替休日", S),
            (10, 8, "体育の日", N),
            (11, 3, "文化の日", N),
            (11, 23, "勤労感謝の日", N),
            (12, 23, "天皇誕生日", N),
            (12, 24, "振替休日", S),
        ],
    );
}

#[test]
fn substitute_after_a_run_of_holidays() {
    // 2008: May 4 (Sunday) → first non-holiday after it is Tuesday May 6.
    assert_eq!(
        holiday_on(date(2008, 5, 5)).map(|h| h.name_ja),
        Some("こどもの日")
    );
    assert_eq!(
        holiday_on(date(2008, 5, 6)).map(|h| h.name_ja),
        Some("振替休日")
    );
    // 2014: May 4 (Sunday) → May 6.
    assert_eq!(
        holiday_on(date(2014, 5, 6)).map(|h| h.name_ja),
        Some("振替休日")
    );
    // 2006 (old rule): May 3–5 Wed–Fri, nothing extra.
    assert_eq!(holiday_on(date(2006, 5, 6)), None);
    // 2003 (old rule): May 4 Sunday was not a national holiday → nothing.
    assert_eq!(holiday_on(date(2003, 5, 6)), None);
}

#[test]
fn year_2009_silver_week() {
    assert_year(
        2009,
        &[
            (1, 1, "元日", N),
            (1, 12, "成人の日", N),
            (2, 11, "建国記念の日", N),
            (3, 20, "春分の日", N),
            (4, 29, "昭和の日", N),
            (5, 3, "憲法記念日", N),
            (5, 4, "みどりの日", N),
            (5, 5, "こどもの日", N),
            (5, 6, "振替休日", S),
            (7, 20, "海の日", N),
            (9, 21, "敬老の日", N),
            (9, 22, "国民の休日", C),
            (9, 23, "秋分の日", N),
            (10, 12, "体育の日", N),
            (11, 3, "文化の日", N),
            (11, 23, "勤労感謝の日", N),
            (12, 23, "天皇誕生日", N),
        ],
    );
}

#[test]
fn year_2015_silver_week() {
    assert_year(
        2015,
        &[
            (1, 1, "元日", N),
            (1, 12, "成人の日", N),
            (2, 11, "建国記念の日", N),
            (3, 21, "春分の日", N),
            (4, 29, "昭和の日", N),
            (5, 3, "憲法記念日", N),
            (5, 4, "みどりの日", N),
            (5, 5, "こどもの日", N),
            (5, 6, "振替休日", S),
            (7, 20, "海の日", N),
            (9, 21, "敬老の日", N),
            (9, 22, "国民の休日", C),
            (9, 23, "秋分の日", N),
            (10, 12, "体育の日", N),
            (11, 3, "文化の日", N),
            (11, 23, "勤労感謝の日", N),
            (12, 23, "天皇誕生日", N),
        ],
    );
}

#[test]
fn year_2019_enthronement() {
    assert_year(
        2019,
        &[
            (1, 1, "元日", N),
            (1, 14, "成人の日", N),
            (2, 11, "建国記念の日", N),
            (3, 21, "春分の日", N),
            (4, 29, "昭和の日", N),
            (4, 30, "国民の休日", C),
            (5, 1, "天皇の即位の日", O),
            (5, 2, "国民の休日", C),
            (5, 3, "憲法記念日", N),
            (5, 4, "みどりの日", N),
            (5, 5, "こどもの日", N),
            (5, 6, "振替休日", S),
            (7, 15, "海の日", N),
            (8, 11, "山の日", N),
            (8, 12, "振替休日", S),
            (9, 16, "敬老の日", N),
            (9, 23, "秋分の日", N),
            (10, 14, "体育の日", N),
            (10, 22, "即位礼正殿の儀", O),
            (11, 3, "文化の日", N),
            (11, 4, "振替休日", S),
            (11, 23, "勤労感謝の日", N),
        ],
    );
    // Ten days off in a row: 4/27 (Sat), 4/28 (Sun), then eight holidays.
    assert_eq!(date(2019, 4, 27).weekday(), Weekday::Saturday);
    assert!(date(2019, 4, 29).series(1.day()).take(8).all(is_holiday));
    assert!(!is_holiday(date(2019, 12, 23)));
    assert!(!is_holiday(date(2019, 2, 23)));
}

#[test]
fn year_2020_olympics() {
    assert_year(
        2020,
        &[
            (1, 1, "元日", N),
            (1, 13, "成人の日", N),
            (2, 11, "建国記念の日", N),
            (2, 23, "天皇誕生日", N),
            (2, 24, "振替休日", S),
            (3, 20, "春分の日", N),
            (4, 29, "昭和の日", N),
            (5, 3, "憲法記念日", N),
            (5, 4, "みどりの日", N),
            (5, 5, "こどもの日", N),
            (5, 6, "振替休日", S),
            (7, 23, "海の日", N),
            (7, 24, "スポーツの日", N),
            (8, 10, "山の日", N),
            (9, 21, "敬老の日", N),
            (9, 22, "秋分の日", N),
            (11, 3, "文化の日", N),
            (11, 23, "勤労感謝の日", N),
        ],
    );
}

#[test]
fn year_2021_olympics() {
    assert_year(
        2021,
        &[
            (1, 1, "元日", N),
            (1, 11, "成人の日", N),
            (2, 11, "建国記念の日", N),
            (2, 23, "天皇誕生日", N),
            (3, 20, "春分の日", N),
            (4, 29, "昭和の日", N),
            (5, 3, "憲法記念日", N),
            (5, 4, "みどりの日", N),
            (5, 5, "こどもの日", N),
            (7, 22, "海の日", N),
            (7, 23, "スポーツの日", N),
            (8, 8, "山の日", N),
            (8, 9, "振替休日", S),
            (9, 20, "敬老の日", N),
            (9, 23, "秋分の日", N),
            (11, 3, "文化の日", N),
            (11, 23, "勤労感謝の日", N),
        ],
    );
    // 2022 is back to normal.
    assert_eq!(
        holiday_on(date(2022, 7, 18)).map(|h| h.name_ja),
        Some("海の日")
    );
    assert_eq!(
        holiday_on(date(2022, 8, 11)).map(|h| h.name_ja),
        Some("山の日")
    );
    assert_eq!(
        holiday_on(date(2022, 10, 10)).map(|h| h.name_ja),
        Some("スポーツの日")
    );
}

#[test]
fn year_2026_silver_week() {
    assert_year(
        2026,
        &[
            (1, 1, "元日", N),
            (1, 12, "成人の日", N),
            (2, 11, "建国記念の日", N),
            (2, 23, "天皇誕生日", N),
            (3, 20, "春分の日", N),
            (4, 29, "昭和の日", N),
            (5, 3, "憲法記念日", N),
            (5, 4, "みどりの日", N),
            (5, 5, "こどもの日", N),
            (5, 6, "振替休日", S),
            (7, 20, "海の日", N),
            (8, 11, "山の日", N),
            (9, 21, "敬老の日", N),
            (9, 22, "国民の休日", C),
            (9, 23, "秋分の日", N),
            (10, 12, "スポーツの日", N),
            (11, 3, "文化の日", N),
            (11, 23, "勤労感謝の日", N),
        ],
    );
}

#[test]
fn september_citizens_holidays_2000_to_2040() {
    let days: Vec<Date> = holidays_between(date(2000, 1, 1), date(2040, 12, 31))
        .into_iter()
        .filter(|(d, h)| h.kind == C && d.month() == 9)
        .map(|(d, _)| d)
        .collect();
    assert_eq!(
        days,
        [
            date(2009, 9, 22),
            date(2015, 9, 22),
            date(2026, 9, 22),
            date(2032, 9, 21),
            date(2037, 9, 22),
        ]
    );
}

#[test]
fn equinox_spot_checks() {
    for d in [
        date(1949, 3, 21),
        date(1960, 3, 20),
        date(1979, 3, 21),
        date(2000, 3, 20),
        date(2023, 3, 21),
        date(2024, 3, 20),
        date(2025, 3, 20),
        date(2026, 3, 20),
    ] {
        let h = holiday_on(d).unwrap_or_else(|| panic!("{d}"));
        assert_eq!(
            (h.name_ja, h.name_en),
            ("春分の日", "Vernal Equinox Day"),
            "{d}"
        );
    }
    // The brief's "2032-09-21" is the citizens' holiday between 敬老の日 and
    // 秋分の日; the equinox day itself is 2032-09-22.
    for d in [
        date(1948, 9, 23),
        date(1979, 9, 24),
        date(2012, 9, 22),
        date(2024, 9, 22),
        date(2025, 9, 23),
        date(2026, 9, 23),
        date(2032, 9, 22),
    ] {
        let h = holiday_on(d).unwrap_or_else(|| panic!("{d}"));
        assert_eq!(
            (h.name_ja, h.name_en),
            ("秋分の日", "Autumnal Equinox Day"),
            "{d}"
        );
    }
    assert_eq!(holiday_on(date(2032, 9, 21)).map(|h| h.kind), Some(C));
}

#[test]
fn english_names() {
    let names = |year| -> Vec<&str> {
        holidays_in_year(year)
            .into_iter()
            .map(|(_, h)| h.name_en)
            .collect()
    };
    assert_eq!(
        names(2019)[..7],
        [
            "New Year's Day",
            "Coming of Age Day",
            "National Foundation Day",
            "Vernal Equinox Day",
            "Showa Day",
            "Citizens' Holiday",
            "Emperor's Enthronement Day",
        ]
    );
    assert_eq!(
        holiday_on(date(2020, 2, 24)).map(|h| h.name_en),
        Some("Substitute Holiday")
    );
    assert_eq!(
        holiday_on(date(2020, 2, 23)).map(|h| h.name_en),
        Some("The Emperor's Birthday")
    );
}

#[test]
fn holidays_between_spans_years() {
    let got: Vec<(Date, &str)> = holidays_between(date(2019, 12, 1), date(2020, 1, 13))
        .into_iter()
        .map(|(d, h)| (d, h.name_ja))
        .collect();
    assert_eq!(
        got,
        [(date(2020, 1, 1), "元日"), (date(2020, 1, 13), "成人の日")]
    );
    assert!(holidays_between(date(2020, 1, 2), date(2020, 1, 1)).is_empty());
    assert_eq!(
        holidays_between(date(2020, 1, 1), date(2020, 1, 1)).len(),
        1
    );
    assert_eq!(
        holidays_between(date(1900, 1, 1), date(1948, 12, 31)),
        holidays_in_year(1948)
    );
}

#[test]
fn every_year_to_2199_is_consistent() {
    for year in 1948..=2199 {
        let days = holidays_in_year(year);
        assert!(days.len() >= 3, "{year}");
        assert!(days.windows(2).all(|w| w[0].0 < w[1].0), "{year}");
        assert!(
            days.iter()
                .all(|(d, _)| d.year() == year && *d >= FIRST_DATE)
        );
        // Exactly one vernal (from 1949) and one autumnal equinox day.
        let count = |name| days.iter().filter(|(_, h)| h.name_ja == name).count();
        assert_eq!(count("春分の日"), usize::from(year >= 1949), "{year}");
        assert_eq!(count("秋分の日"), 1, "{year}");
    }
}

fn date_strategy(from: Date, to: Date) -> impl Strategy<Value = Date> {
    let span = (to - from).get_days();
    (0..=span).prop_map(move |n| from.checked_add(n.days()).unwrap())
}

fn any_date() -> impl Strategy<Value = Date> {
    date_strategy(date(1948, 1, 1), date(2150, 12, 31))
}

proptest! {
    #[test]
    fn substitute_follows_a_sunday_holiday(year in 1948i16..=2150) {
        for (d, h) in holidays_in_year(year) {
            if h.kind != S {
                continue;
            }
            prop_assert!(d > date(1973, 4, 12), "{d}");
            let mut prev = d.yesterday().unwrap();
            prop_assert!(is_national(prev), "{d}: day before is not a national holiday");
            if d >= date(2007, 1, 1) {
                // Walk back over the run of national holidays.
                while prev.weekday() != Weekday::Sunday {
                    prev = prev.yesterday().unwrap();
                    prop_assert!(is_national(prev), "{d}: no Sunday holiday in the run");
                }
            }
            prop_assert_eq!(prev.weekday(), Weekday::Sunday, "{}", d);
        }
    }

    #[test]
    fn sunday_holiday_gets_a_substitute(d in date_strategy(date(1973, 4, 12), date(2150, 12, 31))) {
        if d.weekday() == Weekday::Sunday && is_national(d) {
            let mut next = d.tomorrow().unwrap();
            if d >= date(2007, 1, 1) {
                while is_national(next) {
                    next = next.tomorrow().unwrap();
                }
                prop_assert_eq!(holiday_on(next).map(|h| h.kind), Some(S));
            } else if !is_national(next) {
                prop_assert_eq!(holiday_on(next).map(|h| h.kind), Some(S));
            }
        }
    }

    #[test]
    fn nothing_before_first_date(d in date_strategy(date(1900, 1, 1), date(1948, 7, 19))) {
        prop_assert_eq!(holiday_on(d), None);
    }

    #[test]
    fn citizens_holiday_is_sandwiched(year in 1948i16..=2150) {
        for (d, h) in holidays_in_year(year) {
            if h.kind == C {
                prop_assert!(d >= date(1985, 12, 27));
                prop_assert_ne!(d.weekday(), Weekday::Sunday);
                prop_assert!(is_national(d.yesterday().unwrap()), "{d}");
                prop_assert!(is_national(d.tomorrow().unwrap()), "{d}");
            }
        }
    }

    #[test]
    fn sandwiched_weekday_is_a_holiday(d in date_strategy(date(1985, 12, 27), date(2150, 12, 31))) {
        if d.weekday() != Weekday::Sunday
            && is_national(d.yesterday().unwrap())
            && is_national(d.tomorrow().unwrap())
        {
            prop_assert!(is_holiday(d), "{d}");
        }
    }

    #[test]
    fn year_list_is_sorted_and_unique(year in 1900i16..=2199) {
        let days = holidays_in_year(year);
        prop_assert!(days.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert!(days.iter().all(|(d, _)| d.year() == year && *d >= FIRST_DATE));
    }

    #[test]
    fn holiday_on_agrees_with_year_list(d in any_date()) {
        let from_year = holidays_in_year(d.year())
            .into_iter()
            .find(|&(x, _)| x == d)
            .map(|(_, h)| h);
        prop_assert_eq!(holiday_on(d), from_year);
    }

    #[test]
    fn holidays_between_agrees_with_holiday_on(a in any_date(), len in 0i32..800) {
        let b = a.checked_add(len.days()).unwrap();
        let between = holidays_between(a, b);
        let by_day: Vec<(Date, Holiday)> = a
            .series(1.day())
            .take_while(|&d| d <= b)
            .filter_map(|d| holiday_on(d).map(|h| (d, h)))
            .collect();
        prop_assert_eq!(between, by_day);
    }
}

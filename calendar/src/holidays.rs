//! Japanese national holidays (国民の祝日) and the other days off defined by
//! the Act on National Holidays (国民の祝日に関する法律, 昭和23年法律第178号),
//! computed from the law itself. Everything here is pure: no I/O, no tables
//! downloaded at run time.
//!
//! The computation for one year runs in this order:
//!
//! 1. `RULES`: the statutory holidays, each with the years it was in force
//!    (fixed dates, "Happy Monday" weekdays and the two equinox days);
//! 2. `ONE_OFFS`: days off created by special one-off laws (imperial
//!    weddings, funeral, enthronement);
//! 3. `OLYMPIC_MOVES`: the 2020/2021 Tokyo Olympics special law, which moved
//!    海の日, スポーツの日 and 山の日 in those two years;
//! 4. substitute holidays (振替休日, Article 3(2));
//! 5. citizens' holidays (国民の休日, Article 3(3)).
//!
//! Dates before [`FIRST_DATE`] (1948-07-20, the day the Act took effect) have
//! no holidays.
//!
//! The equinox days are *not* fixed by the Act: each year's dates are
//! announced in the official gazette (官報) on the first weekday of February
//! of the preceding year. Here they come from the standard astronomical
//! approximation (see `vernal_equinox_day`); for years the gazette has not
//! announced yet, the result is a prediction. The approximation's constants
//! are given for 1900–2150; later years reuse the 2100–2150 constants, an
//! extrapolation that gets less reliable the further out it goes (every year
//! up to 9999 is computed without panicking). All other rules for future
//! years assume the law stays as it is today.

use jiff::civil::{Date, Weekday, date};

/// What kind of day off a [`Holiday`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolidayKind {
    /// A 国民の祝日 listed in Article 2 of the Act (including the days the
    /// 2020/2021 Olympic special law moved).
    National,
    /// 振替休日: the day off given when a national holiday falls on a Sunday.
    Substitute,
    /// 国民の休日: a day sandwiched between two national holidays.
    Citizens,
    /// A day off created by a one-off special law (e.g. 即位礼正殿の儀).
    OneOff,
}

/// A day off, with its Japanese and English names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holiday {
    /// Official Japanese name, e.g. `元日`.
    pub name_ja: &'static str,
    /// English name as used by the Cabinet Office, e.g. `New Year's Day`.
    pub name_en: &'static str,
    /// Which rule produced the day off.
    pub kind: HolidayKind,
}

/// First date the law applies.
pub const FIRST_DATE: Date = date(1948, 7, 20);

const fn national(name_ja: &'static str, name_en: &'static str) -> Holiday {
    Holiday {
        name_ja,
        name_en,
        kind: HolidayKind::National,
    }
}

const fn one_off(name_ja: &'static str, name_en: &'static str) -> Holiday {
    Holiday {
        name_ja,
        name_en,
        kind: HolidayKind::OneOff,
    }
}

const NEW_YEARS_DAY: Holiday = national("元日", "New Year's Day");
const COMING_OF_AGE_DAY: Holiday = national("成人の日", "Coming of Age Day");
const NATIONAL_FOUNDATION_DAY: Holiday = national("建国記念の日", "National Foundation Day");
const EMPERORS_BIRTHDAY: Holiday = national("天皇誕生日", "The Emperor's Birthday");
const VERNAL_EQUINOX_DAY: Holiday = national("春分の日", "Vernal Equinox Day");
const SHOWA_DAY: Holiday = national("昭和の日", "Showa Day");
const CONSTITUTION_DAY: Holiday = national("憲法記念日", "Constitution Memorial Day");
const GREENERY_DAY: Holiday = national("みどりの日", "Greenery Day");
const CHILDRENS_DAY: Holiday = national("こどもの日", "Children's Day");
const MARINE_DAY: Holiday = national("海の日", "Marine Day");
const MOUNTAIN_DAY: Holiday = national("山の日", "Mountain Day");
const RESPECT_FOR_THE_AGED_DAY: Holiday = national("敬老の日", "Respect for the Aged Day");
const AUTUMNAL_EQUINOX_DAY: Holiday = national("秋分の日", "Autumnal Equinox Day");
const HEALTH_AND_SPORTS_DAY: Holiday = national("体育の日", "Health and Sports Day");
const SPORTS_DAY: Holiday = national("スポーツの日", "Sports Day");
const CULTURE_DAY: Holiday = national("文化の日", "Culture Day");
const LABOR_THANKSGIVING_DAY: Holiday = national("勤労感謝の日", "Labor Thanksgiving Day");

const SUBSTITUTE_HOLIDAY: Holiday = Holiday {
    name_ja: "振替休日",
    name_en: "Substitute Holiday",
    kind: HolidayKind::Substitute,
};

const CITIZENS_HOLIDAY: Holiday = Holiday {
    name_ja: "国民の休日",
    name_en: "Citizens' Holiday",
    kind: HolidayKind::Citizens,
};

/// How a statutory holiday's date is determined in a given year.
#[derive(Debug, Clone, Copy)]
enum When {
    /// A fixed month and day.
    Fixed(i8, i8),
    /// The nth Monday of a month (ハッピーマンデー制度).
    NthMonday(i8, i8),
    /// 春分日, see [`vernal_equinox_day`].
    VernalEquinox,
    /// 秋分日, see [`autumnal_equinox_day`].
    AutumnalEquinox,
}

/// A statutory holiday in force from `from` to `to` (inclusive years).
#[derive(Debug, Clone, Copy)]
struct Rule {
    from: i16,
    to: i16,
    when: When,
    holiday: Holiday,
}

const OPEN: i16 = i16::MAX;

const fn rule(from: i16, to: i16, when: When, holiday: Holiday) -> Rule {
    Rule {
        from,
        to,
        when,
        holiday,
    }
}

/// Article 2 of the Act, with the amendments that changed it.
const RULES: &[Rule] = &[
    // Original 1948 Act (in force from 1948-07-20).
    rule(1948, OPEN, When::Fixed(1, 1), NEW_YEARS_DAY),
    rule(1948, 1999, When::Fixed(1, 15), COMING_OF_AGE_DAY),
    // 1998 amendment (Happy Monday, from 2000): 2nd Monday of January.
    rule(2000, OPEN, When::NthMonday(1, 2), COMING_OF_AGE_DAY),
    // 1966 amendment: 建国記念の日 from 1967 (date set by cabinet order).
    rule(1967, OPEN, When::Fixed(2, 11), NATIONAL_FOUNDATION_DAY),
    rule(1948, OPEN, When::VernalEquinox, VERNAL_EQUINOX_DAY),
    // Emperor Shōwa's birthday until 1988; 1989 amendment (in force from
    // 1989-02-17): Emperor Akihito's birthday; 2017 abdication law: none in
    // 2019, Emperor Naruhito's birthday from 2020.
    rule(1948, 1988, When::Fixed(4, 29), EMPERORS_BIRTHDAY),
    rule(1989, 2018, When::Fixed(12, 23), EMPERORS_BIRTHDAY),
    rule(2020, OPEN, When::Fixed(2, 23), EMPERORS_BIRTHDAY),
    // 1989 amendment: April 29 becomes みどりの日; 2005 amendment (from
    // 2007): April 29 becomes 昭和の日 and みどりの日 moves to May 4.
    rule(1989, 2006, When::Fixed(4, 29), GREENERY_DAY),
    rule(2007, OPEN, When::Fixed(4, 29), SHOWA_DAY),
    rule(1948, OPEN, When::Fixed(5, 3), CONSTITUTION_DAY),
    rule(2007, OPEN, When::Fixed(5, 4), GREENERY_DAY),
    rule(1948, OPEN, When::Fixed(5, 5), CHILDRENS_DAY),
    // 1995 amendment: 海の日 from 1996; 2001 amendment (Happy Monday, from
    // 2003): 3rd Monday of July.
    rule(1996, 2002, When::Fixed(7, 20), MARINE_DAY),
    rule(2003, OPEN, When::NthMonday(7, 3), MARINE_DAY),
    // 2014 amendment: 山の日 from 2016.
    rule(2016, OPEN, When::Fixed(8, 11), MOUNTAIN_DAY),
    // 1966 amendment: 敬老の日 from 1966; 2001 amendment (from 2003): 3rd
    // Monday of September.
    rule(1966, 2002, When::Fixed(9, 15), RESPECT_FOR_THE_AGED_DAY),
    rule(2003, OPEN, When::NthMonday(9, 3), RESPECT_FOR_THE_AGED_DAY),
    rule(1948, OPEN, When::AutumnalEquinox, AUTUMNAL_EQUINOX_DAY),
    // 1966 amendment: 体育の日 from 1966; 1998 amendment (from 2000): 2nd
    // Monday of October; 2018 amendment: renamed スポーツの日 from 2020.
    rule(1966, 1999, When::Fixed(10, 10), HEALTH_AND_SPORTS_DAY),
    rule(2000, 2019, When::NthMonday(10, 2), HEALTH_AND_SPORTS_DAY),
    rule(2020, OPEN, When::NthMonday(10, 2), SPORTS_DAY),
    rule(1948, OPEN, When::Fixed(11, 3), CULTURE_DAY),
    rule(1948, OPEN, When::Fixed(11, 23), LABOR_THANKSGIVING_DAY),
];

/// Days off created by one-off special laws. The 2019 law (平成30年法律第99号)
/// deems its two days national holidays, which is why 2019-04-30 and
/// 2019-05-02 became citizens' holidays; the earlier ones never touched a
/// Sunday or a sandwich, so treating all of them alike is exact.
const ONE_OFFS: &[(Date, Holiday)] = &[
    (
        date(1959, 4, 10),
        one_off(
            "皇太子明仁親王の結婚の儀",
            "Wedding Ceremony of Crown Prince Akihito",
        ),
    ),
    (
        date(1989, 2, 24),
        one_off("昭和天皇の大喪の礼", "Funeral Ceremony of Emperor Showa"),
    ),
    (
        date(1990, 11, 12),
        one_off("即位礼正殿の儀", "Enthronement Ceremony"),
    ),
    (
        date(1993, 6, 9),
        one_off(
            "皇太子徳仁親王の結婚の儀",
            "Wedding Ceremony of Crown Prince Naruhito",
        ),
    ),
    (
        date(2019, 5, 1),
        one_off("天皇の即位の日", "Emperor's Enthronement Day"),
    ),
    (
        date(2019, 10, 22),
        one_off("即位礼正殿の儀", "Enthronement Ceremony"),
    ),
];

/// Tokyo 2020 Olympics special law (2018, amended 2020 for the postponement):
/// in 2020 and 2021 these holidays fall on these dates *instead of* their
/// [`RULES`] dates. They remain national holidays (2021-08-08 was a Sunday,
/// so 2021-08-09 was a substitute holiday).
const OLYMPIC_MOVES: &[(Date, Holiday)] = &[
    (date(2020, 7, 23), MARINE_DAY),
    (date(2020, 7, 24), SPORTS_DAY),
    (date(2020, 8, 10), MOUNTAIN_DAY),
    (date(2021, 7, 22), MARINE_DAY),
    (date(2021, 7, 23), SPORTS_DAY),
    (date(2021, 8, 8), MOUNTAIN_DAY),
];

/// 1973 amendment (in force 1973-04-12): a national holiday on a Sunday
/// makes the following day (Monday) a holiday. First case: 1973-04-30.
const SUBSTITUTE_1973: Date = date(1973, 4, 12);
/// 2005 amendment (in force 2007-01-01): a national holiday on a Sunday makes
/// the nearest following day that is not a national holiday a holiday.
const SUBSTITUTE_2007: Date = date(2007, 1, 1);
/// 1985 amendment (in force 1985-12-27): a day between two national holidays
/// is a holiday (国民の休日).
const CITIZENS_1985: Date = date(1985, 12, 27);

/// Equinox formula constants, in millionths of a day: (from year, vernal C,
/// autumnal C). The last row is also used after 2150.
const EQUINOX_ERAS: &[(i16, i64, i64)] = &[
    (1900, 20_835_700, 23_258_800),
    (1980, 20_843_100, 23_248_800),
    (2100, 21_851_000, 24_248_800),
];

/// Day of the month of the equinox with era constant `c` (in millionths):
/// `floor(C + 0.242194 * (Y - 1980) - floor((Y - 1980) / 4))`.
///
/// Computed in exact fixed-point integers, so no floating-point rounding can
/// shift a day. For 1900–1979 this uses `floor((Y - 1980) / 4)`, which equals
/// the `int((Y - 1983) / 4)` (truncation toward zero) of the commonly quoted
/// form; both give e.g. 1960-03-20 and 1979-09-24.
fn equinox_day(year: i16, pick: impl Fn(&(i16, i64, i64)) -> i64) -> i64 {
    let era = EQUINOX_ERAS
        .iter()
        .rev()
        .find(|era| era.0 <= year)
        .unwrap_or(&EQUINOX_ERAS[0]);
    let y = i64::from(year) - 1980;
    (pick(era) + 242_194 * y).div_euclid(1_000_000) - y.div_euclid(4)
}

/// 春分日 (vernal equinox day) of `year`, by the standard approximation with
/// C = 20.8357 (1900–1979), 20.8431 (1980–2099), 21.8510 (2100–2150).
///
/// This matches every date announced so far in the official gazette, but the
/// gazette only announces the following year's dates each February: for
/// later years the result is a prediction. Beyond 2150 the 2100–2150 constant
/// is reused (an extrapolation);
/// `None` only if the formula leaves the month (far-future years).
fn vernal_equinox_day(year: i16) -> Option<Date> {
    let day = equinox_day(year, |era| era.1);
    Date::new(year, 3, i8::try_from(day).ok()?).ok()
}

/// 秋分日 (autumnal equinox day) of `year`, by the standard approximation
/// with C = 23.2588 (1900–1979), 23.2488 (1980–2099), 24.2488 (2100–2150).
/// Same caveats as [`vernal_equinox_day`]: a prediction for years not yet
/// announced in the gazette.
fn autumnal_equinox_day(year: i16) -> Option<Date> {
    let day = equinox_day(year, |era| era.2);
    Date::new(year, 9, i8::try_from(day).ok()?).ok()
}

impl When {
    fn date_in(self, year: i16) -> Option<Date> {
        match self {
            When::Fixed(month, day) => Date::new(year, month, day).ok(),
            When::NthMonday(month, nth) => Date::new(year, month, 1)
                .ok()?
                .nth_weekday_of_month(nth, Weekday::Monday)
                .ok(),
            When::VernalEquinox => vernal_equinox_day(year),
            When::AutumnalEquinox => autumnal_equinox_day(year),
        }
    }
}

/// National holidays (Article 2, one-offs and Olympic moves) of `year`,
/// sorted by date, before filtering by [`FIRST_DATE`].
fn national_holidays(year: i16) -> Vec<(Date, Holiday)> {
    let moved = |holiday: Holiday| {
        OLYMPIC_MOVES
            .iter()
            .any(|&(d, h)| d.year() == year && h == holiday)
    };
    let mut days: Vec<(Date, Holiday)> = RULES
        .iter()
        .filter(|r| r.from <= year && year <= r.to && !moved(r.holiday))
        .filter_map(|r| Some((r.when.date_in(year)?, r.holiday)))
        .chain(
            ONE_OFFS
                .iter()
                .chain(OLYMPIC_MOVES)
                .filter(|(d, _)| d.year() == year)
                .copied(),
        )
        .collect();
    days.sort_by_key(|&(d, _)| d);
    days
}

/// Holidays of one year in date order (empty before 1948; from 1948-07-20 on in 1948).
#[must_use]
pub fn holidays_in_year(year: i16) -> Vec<(Date, Holiday)> {
    if year < FIRST_DATE.year() || year > Date::MAX.year() {
        return Vec::new();
    }
    let national = national_holidays(year);
    let is_national = |d: Date| national.binary_search_by_key(&d, |&(n, _)| n).is_ok();
    let mut days = national.clone();

    // 振替休日 (Article 3(2)).
    for &(d, _) in &national {
        if d < SUBSTITUTE_1973 || d.weekday() != Weekday::Sunday {
            continue;
        }
        let mut next = d.tomorrow().ok();
        if d >= SUBSTITUTE_2007 {
            // 2007 rule: skip over following national holidays.
            while let Some(n) = next.filter(|&n| is_national(n)) {
                next = n.tomorrow().ok();
            }
        }
        // 1973 rule: only the Monday itself, if it is not already a holiday.
        if let Some(n) = next.filter(|&n| !is_national(n)) {
            days.push((n, SUBSTITUTE_HOLIDAY));
        }
    }
    days.sort_by_key(|&(d, _)| d);

    // 国民の休日 (Article 3(3)): a non-Sunday day whose neighbours are both
    // national holidays. Until 2006 the Act excluded Sundays and substitute
    // holidays explicitly; since 2007 such a day is a Sunday or a substitute
    // holiday anyway, so it is listed under that name.
    for pair in national.windows(2) {
        let (before, after) = (pair[0].0, pair[1].0);
        let Some(middle) = before.tomorrow().ok() else {
            continue;
        };
        if middle >= CITIZENS_1985
            && middle.tomorrow().ok() == Some(after)
            && middle.weekday() != Weekday::Sunday
            && days.binary_search_by_key(&middle, |&(d, _)| d).is_err()
        {
            days.push((middle, CITIZENS_HOLIDAY));
        }
    }
    days.sort_by_key(|&(d, _)| d);

    days.retain(|&(d, _)| d >= FIRST_DATE);
    days
}

/// The holiday on a date, if any.
#[must_use]
pub fn holiday_on(date: Date) -> Option<Holiday> {
    let days = holidays_in_year(date.year());
    days.binary_search_by_key(&date, |&(d, _)| d)
        .ok()
        .map(|i| days[i].1)
}

/// Holidays in an inclusive date range, in order.
#[must_use]
pub fn holidays_between(from: Date, to: Date) -> Vec<(Date, Holiday)> {
    if from > to {
        return Vec::new();
    }
    (from.year()..=to.year())
        .flat_map(holidays_in_year)
        .filter(|&(d, _)| from <= d && d <= to)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equinox_formula_spot_checks() {
        for (year, day) in [
            (1949, 21),
            (1960, 20),
            (1979, 21),
            (2000, 20),
            (2023, 21),
            (2024, 20),
            (2025, 20),
            (2026, 20),
            (2092, 19),
        ] {
            assert_eq!(vernal_equinox_day(year), Some(date(year, 3, day)), "{year}");
        }
        for (year, day) in [
            (1948, 23),
            (1951, 24),
            (1979, 24),
            (1980, 23),
            (2012, 22),
            (2024, 22),
            (2025, 23),
            (2026, 23),
            (2032, 22),
        ] {
            assert_eq!(
                autumnal_equinox_day(year),
                Some(date(year, 9, day)),
                "{year}"
            );
        }
    }

    #[test]
    fn equinox_stays_in_plausible_range_until_2199() {
        for year in 1948..=2199 {
            let v = vernal_equinox_day(year).unwrap();
            let a = autumnal_equinox_day(year).unwrap();
            assert!((19..=22).contains(&v.day()), "{v}");
            assert!((21..=24).contains(&a.day()), "{a}");
        }
    }

    #[test]
    fn rules_have_sane_ranges_and_dates() {
        for r in RULES {
            assert!(r.from <= r.to, "{r:?}");
            assert!(r.when.date_in(r.from).is_some(), "{r:?}");
        }
        for &(d, h) in ONE_OFFS.iter().chain(OLYMPIC_MOVES) {
            assert!(d >= FIRST_DATE, "{h:?}");
        }
    }

    #[test]
    fn no_national_holidays_collide() {
        for year in 1948..=2199 {
            let days = national_holidays(year);
            assert!(days.windows(2).all(|w| w[0].0 < w[1].0), "{year}: {days:?}");
        }
    }

    #[test]
    fn olympic_years_drop_normal_dates() {
        for year in [2020, 2021] {
            let days = national_holidays(year);
            let count = |h: Holiday| days.iter().filter(|&&(_, x)| x == h).count();
            assert_eq!(count(MARINE_DAY), 1);
            assert_eq!(count(SPORTS_DAY), 1);
            assert_eq!(count(MOUNTAIN_DAY), 1);
        }
    }

    #[test]
    fn extreme_years_do_not_panic() {
        for year in [i16::MIN, -9999, 0, 1947, 2200, 5000, 9999, i16::MAX] {
            let _ = holidays_in_year(year);
        }
        assert!(holidays_in_year(i16::MAX).is_empty());
        assert!(holidays_in_year(1947).is_empty());
        assert_eq!(holidays_between(Date::MAX, Date::MIN), Vec::new());
        let _ = holidays_between(Date::MIN, date(-9990, 1, 1));
        let _ = holiday_on(Date::MAX);
        let _ = holiday_on(Date::MIN);
    }
}

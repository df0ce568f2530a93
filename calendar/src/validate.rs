//! Turns a [`CalendarConfig`] into a [`Calendar`], collecting every mistake with the field that
//! holds it and the rule it breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::calendar::{Calendar, DailyWindow, MonthDay};
use crate::config::{BatchSchedule, CalendarConfig, DatedReason, Tier, WindowConfig};
use crate::time_of_day::TimeOfDay;

/// One mistake: the field path (as in the manifest, e.g. `onlineWindows.cs.end`) and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every mistake found in one calendar, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl ValidationErrors {
    /// Whether some error is about this field (or a field below it).
    pub fn mentions(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field.starts_with(field))
    }
}

#[derive(Default)]
struct Errors(Vec<ValidationError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn time(&mut self, field: String, text: &str) -> Option<TimeOfDay> {
        TimeOfDay::parse(text).map_err(|m| self.push(field, m)).ok()
    }

    fn date(&mut self, field: String, text: &str) -> Option<Date> {
        match text.parse::<Date>() {
            Ok(d) if text.len() == 10 => Some(d),
            _ => {
                self.push(
                    field,
                    format!("{text:?} is not a real date of the form YYYY-MM-DD"),
                );
                None
            }
        }
    }

    fn window(&mut self, field: &str, w: &WindowConfig) -> Option<DailyWindow> {
        let start = self.time(format!("{field}.start"), &w.start);
        let end = self.time(format!("{field}.end"), &w.end);
        let (start, end) = (start?, end?);
        if start.minutes() >= 24 * 60 {
            self.push(
                format!("{field}.start"),
                format!("{start} must be before 24:00"),
            );
            return None;
        }
        if end <= start {
            self.push(
                format!("{field}.end"),
                format!("{end} is not after start {start}"),
            );
            return None;
        }
        if end.minutes() - start.minutes() >= 24 * 60 {
            self.push(
                format!("{field}.end"),
                format!("{end} is 24 hours or more after start {start}; a window must close before the next one opens"),
            );
            return None;
        }
        Some(DailyWindow { start, end })
    }
}

fn month_day(errors: &mut Errors, field: String, text: &str) -> Option<MonthDay> {
    let parsed = text
        .split_once('-')
        .filter(|(m, d)| m.len() == 2 && d.len() == 2)
        .and_then(|(m, d)| Some((m.parse::<i8>().ok()?, d.parse::<i8>().ok()?)));
    // 2000 is a leap year, so Feb 29 counts as a real month-day.
    match parsed.filter(|&(m, d)| Date::new(2000, m, d).is_ok()) {
        Some((month, day)) => Some(MonthDay { month, day }),
        None => {
            errors.push(
                field,
                format!("{text:?} is not a real month-day of the form MM-DD"),
            );
            None
        }
    }
}

fn dated(errors: &mut Errors, field: &str, list: &[DatedReason]) -> BTreeMap<Date, String> {
    let mut out = BTreeMap::new();
    for (i, item) in list.iter().enumerate() {
        if let Some(date) = errors.date(format!("{field}[{i}].date"), &item.date)
            && out.insert(date, item.reason.clone()).is_some()
        {
            errors.push(
                format!("{field}[{i}].date"),
                format!("{date} is listed twice"),
            );
        }
    }
    out
}

/// Days of a leap year (2000) a month-day range covers, to detect overlapping periods.
fn covered_days(from: MonthDay, to: MonthDay) -> BTreeSet<(i8, i8)> {
    let mut days = BTreeSet::new();
    let mut d = Date::new(2000, from.month, from.day).unwrap();
    loop {
        days.insert((d.month(), d.day()));
        if (d.month(), d.day()) == (to.month, to.day) {
            return days;
        }
        d = d.tomorrow().unwrap();
        if d.year() > 2000 {
            d = Date::new(2000, 1, 1).unwrap();
        }
    }
}

pub(crate) fn compile(config: &CalendarConfig) -> Result<Calendar, ValidationErrors> {
    let mut errors = Errors::default();

    let tz = TimeZone::get(&config.time_zone)
        .map_err(|_| {
            errors.push(
                "timeZone",
                format!("{:?} is not a known IANA time zone", config.time_zone),
            )
        })
        .ok();

    let mut closed_weekdays = [false; 7];
    for w in &config.closed_weekdays {
        closed_weekdays[jiff::civil::Weekday::from(*w).to_monday_zero_offset() as usize] = true;
    }
    if closed_weekdays.iter().all(|&c| c) {
        errors.push("closedWeekdays", "at least one weekday must stay open");
    }

    let mut closed_periods = Vec::new();
    let mut seen_days: BTreeMap<(i8, i8), usize> = BTreeMap::new();
    for (i, p) in config.closed_periods.iter().enumerate() {
        let from = month_day(&mut errors, format!("closedPeriods[{i}].from"), &p.from);
        let to = month_day(&mut errors, format!("closedPeriods[{i}].to"), &p.to);
        let (Some(from), Some(to)) = (from, to) else {
            continue;
        };
        if let Some(other) = covered_days(from, to)
            .into_iter()
            .find_map(|d| seen_days.insert(d, i))
        {
            errors.push(
                format!("closedPeriods[{i}]"),
                format!("overlaps closedPeriods[{other}]"),
            );
        }
        closed_periods.push((from, to, p.name.clone()));
    }

    let extra_closed = dated(&mut errors, "extraClosedDates", &config.extra_closed_dates);
    let extra_open = dated(&mut errors, "extraOpenDates", &config.extra_open_dates);
    for (i, item) in config.extra_open_dates.iter().enumerate() {
        if let Ok(date) = item.date.parse::<Date>()
            && extra_closed.contains_key(&date)
        {
            errors.push(
                format!("extraOpenDates[{i}].date"),
                format!("{date} is also in extraClosedDates"),
            );
        }
    }

    let windows = Tier::ALL.map(|t| {
        errors.window(
            &format!("onlineWindows.{}", t.field()),
            config.online_windows.of(t),
        )
    });

    let mut prefecture_ends = BTreeMap::new();
    for (i, o) in config.prefecture_online_ends.iter().enumerate() {
        let field = format!("prefectureOnlineEnds[{i}]");
        let code = juki_codes::validate_prefecture_code(&o.prefecture)
            .map_err(|e| {
                errors.push(
                    format!("{field}.prefecture"),
                    format!("{:?}: {e}", o.prefecture),
                )
            })
            .ok();
        let end = errors.time(format!("{field}.onlineEnd"), &o.online_end);
        if let (Some(code), Some(end)) = (code, end)
            && prefecture_ends.insert(code, (end, field.clone())).is_some()
        {
            errors.push(
                format!("{field}.prefecture"),
                format!("prefecture {code:02} is listed twice"),
            );
        }
    }

    // Dependency order: a tier above opens no later and closes no earlier than the tiers below.
    if let [Some(national), Some(prefecture), Some(cs)] = windows {
        nest(
            &mut errors,
            ("onlineWindows.national", national),
            ("onlineWindows.prefecture", prefecture),
        );
        nest(
            &mut errors,
            ("onlineWindows.prefecture", prefecture),
            ("onlineWindows.cs", cs),
        );
        for (end, field) in prefecture_ends.values() {
            let own = DailyWindow {
                start: prefecture.start,
                end: *end,
            };
            if *end <= prefecture.start {
                errors.push(
                    format!("{field}.onlineEnd"),
                    format!(
                        "{end} is not after the prefecture start {}",
                        prefecture.start
                    ),
                );
                continue;
            }
            nest(
                &mut errors,
                ("onlineWindows.national", national),
                (field, own),
            );
            nest(&mut errors, (field, own), ("onlineWindows.cs", cs));
        }
    }

    let window_service = errors.window("windowService", &config.window_service);
    if let (Some(ws), Some(cs)) = (window_service, windows[2])
        && (ws.start < cs.start || ws.end > cs.end)
    {
        errors.push(
            "windowService",
            format!("{ws} must lie inside the CS online window {cs}"),
        );
    }

    let mut names = BTreeSet::new();
    for (i, b) in config.batches.iter().enumerate() {
        let field = format!("batches[{i}]");
        let name_ok = !b.name.is_empty()
            && b.name.len() <= 20
            && b.name.starts_with(|c: char| c.is_ascii_lowercase())
            && !b.name.ends_with('-')
            && b.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            errors.push(
                format!("{field}.name"),
                format!(
                    "{:?} must be 1–20 lowercase letters, digits or '-', starting with a letter",
                    b.name
                ),
            );
        } else if !names.insert(b.name.clone()) {
            errors.push(
                format!("{field}.name"),
                format!("{:?} is used by an earlier batch", b.name),
            );
        }
        match (b.schedule, b.weekday, b.day_of_month) {
            (BatchSchedule::Weekly, None, _) => errors.push(
                format!("{field}.weekday"),
                "required when schedule is Weekly",
            ),
            (BatchSchedule::Monthly, _, None) => errors.push(
                format!("{field}.dayOfMonth"),
                "required when schedule is Monthly",
            ),
            (BatchSchedule::Monthly, _, Some(d)) if !(1..=31).contains(&d) => errors.push(
                format!("{field}.dayOfMonth"),
                format!("{d} is outside 1–31"),
            ),
            (s, Some(_), _) if s != BatchSchedule::Weekly => errors.push(
                format!("{field}.weekday"),
                "only applies when schedule is Weekly",
            ),
            (s, _, Some(_)) if s != BatchSchedule::Monthly => errors.push(
                format!("{field}.dayOfMonth"),
                "only applies when schedule is Monthly",
            ),
            _ => {}
        }
        if b.tiers.is_empty() {
            errors.push(format!("{field}.tiers"), "must name at least one tier");
        }
    }

    match (errors.0.is_empty(), tz, windows, window_service) {
        (true, Some(tz), [Some(n), Some(p), Some(c)], Some(ws)) => Ok(Calendar {
            tz,
            closed_weekdays,
            national_holidays: config.national_holidays,
            closed_periods,
            extra_closed,
            extra_open,
            windows: [n, p, c],
            prefecture_ends: prefecture_ends
                .into_iter()
                .map(|(k, (end, _))| (k, end))
                .collect(),
            window_service: ws,
            batches: config.batches.clone(),
        }),
        _ => Err(ValidationErrors(errors.0)),
    }
}

fn nest(
    errors: &mut Errors,
    (outer_field, outer): (&str, DailyWindow),
    (inner_field, inner): (&str, DailyWindow),
) {
    if outer.start > inner.start {
        errors.push(format!("{outer_field}.start"), format!("{} opens after {inner_field} ({}); a tier must open no later than the tiers below it", outer.start, inner.start));
    }
    if outer.end < inner.end {
        errors.push(format!("{outer_field}.end"), format!("{} closes before {inner_field} ({}); a tier must close no earlier than the tiers below it", outer.end, inner.end));
    }
}

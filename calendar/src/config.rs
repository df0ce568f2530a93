//! The operating calendar as people write it: the `spec` of the OperatingCalendar resource.
//!
//! Values stay as written (strings for dates and times) so that [`crate::Calendar::new`] can
//! report every mistake with the field that holds it. Defaults are the Juki-net common operating
//! hours: Asia/Tokyo, Saturdays and Sundays closed, national holidays closed, Dec 29 – Jan 3 closed,
//! window services 09:00–17:00, daily statistics then backup.

use serde::{Deserialize, Serialize};

#[cfg(feature = "schema")]
use schemars::JsonSchema;

/// The three tiers of the network, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum Tier {
    /// The national server (全国サーバ).
    National,
    /// A prefectural server (都道府県サーバ).
    Prefecture,
    /// A municipality's communication server (コミュニケーションサーバ).
    #[serde(rename = "CS")]
    Cs,
}

impl Tier {
    /// All tiers in start order.
    pub const ALL: [Tier; 3] = [Tier::National, Tier::Prefecture, Tier::Cs];

    /// The name used in manifests: National, Prefecture, CS.
    pub const fn as_str(self) -> &'static str {
        match self {
            Tier::National => "National",
            Tier::Prefecture => "Prefecture",
            Tier::Cs => "CS",
        }
    }

    /// The field name under `onlineWindows`.
    pub const fn field(self) -> &'static str {
        match self {
            Tier::National => "national",
            Tier::Prefecture => "prefecture",
            Tier::Cs => "cs",
        }
    }
}

/// A day of the week, by its English name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum WeekdayName {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl From<WeekdayName> for jiff::civil::Weekday {
    fn from(w: WeekdayName) -> Self {
        use jiff::civil::Weekday as W;
        match w {
            WeekdayName::Monday => W::Monday,
            WeekdayName::Tuesday => W::Tuesday,
            WeekdayName::Wednesday => W::Wednesday,
            WeekdayName::Thursday => W::Thursday,
            WeekdayName::Friday => W::Friday,
            WeekdayName::Saturday => W::Saturday,
            WeekdayName::Sunday => W::Sunday,
        }
    }
}

/// The operating calendar shared by every tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CalendarConfig {
    /// IANA time zone in which dates and times of day are read. Default Asia/Tokyo.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Weekdays on which the network does not operate. Default Saturday and Sunday.
    #[serde(default = "default_closed_weekdays")]
    pub closed_weekdays: Vec<WeekdayName>,
    /// Whether national holidays (国民の祝日, substitute holidays and citizens' holidays, computed
    /// from the Act on National Holidays) are closed. Default true.
    #[serde(default = "yes")]
    pub national_holidays: bool,
    /// Closed periods that recur every year, as month-day ranges that may wrap the year end.
    /// Default Dec 29 – Jan 3 (the year-end closure).
    #[serde(default = "default_closed_periods")]
    pub closed_periods: Vec<ClosedPeriod>,
    /// One-off closed dates.
    #[serde(default)]
    pub extra_closed_dates: Vec<DatedReason>,
    /// One-off open dates; they override every closing rule.
    #[serde(default)]
    pub extra_open_dates: Vec<DatedReason>,
    /// The online window of each tier on an open day.
    #[serde(default)]
    pub online_windows: TierWindows,
    /// Per-prefecture online end of the prefectural server (each prefecture sets its own).
    #[serde(default)]
    pub prefecture_online_ends: Vec<PrefectureOnlineEnd>,
    /// The nationwide window-service hours of the wide-area services. Default 09:00–17:00.
    #[serde(default = "default_window_service")]
    pub window_service: WindowConfig,
    /// Batches run at every node after its online operation ends, in this order.
    /// Default: daily `statistics`, then daily `backup`.
    #[serde(default = "default_batches")]
    pub batches: Vec<BatchConfig>,
}

/// A recurring closed period, e.g. from "12-29" to "01-03".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClosedPeriod {
    /// What the period is, shown as the reason a day is closed.
    pub name: String,
    /// First closed day, "MM-DD".
    #[cfg_attr(
        feature = "schema",
        schemars(pattern(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"))
    )]
    pub from: String,
    /// Last closed day, "MM-DD"; earlier than `from` when the period wraps the year end.
    #[cfg_attr(
        feature = "schema",
        schemars(pattern(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"))
    )]
    pub to: String,
}

/// A date with the reason it is listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DatedReason {
    /// The date, "YYYY-MM-DD".
    #[cfg_attr(feature = "schema", schemars(pattern(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")))]
    pub date: String,
    /// Why, shown in status and forecasts.
    #[serde(default)]
    pub reason: String,
}

/// A daily window, "HH:MM" to "HH:MM"; the end may pass midnight up to "29:59".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct WindowConfig {
    /// Opening time, "HH:MM".
    #[cfg_attr(feature = "schema", schemars(pattern(r"^[0-2][0-9]:[0-5][0-9]$")))]
    pub start: String,
    /// Closing time, "HH:MM", later than start; up to "29:59" (05:59 the next morning).
    #[cfg_attr(feature = "schema", schemars(pattern(r"^[0-2][0-9]:[0-5][0-9]$")))]
    pub end: String,
}

impl WindowConfig {
    fn new(start: &str, end: &str) -> Self {
        WindowConfig {
            start: start.into(),
            end: end.into(),
        }
    }
}

/// The online window of each tier. A tier above must open no later and close no earlier than
/// every tier below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TierWindows {
    /// National server. Default 07:00–22:00.
    #[serde(default = "default_national_window")]
    pub national: WindowConfig,
    /// Prefectural servers (the end can be overridden per prefecture). Default 07:30–21:30.
    #[serde(default = "default_prefecture_window")]
    pub prefecture: WindowConfig,
    /// Communication servers. Default 08:00–21:00.
    #[serde(default = "default_cs_window")]
    pub cs: WindowConfig,
}

impl TierWindows {
    /// The configured window of a tier.
    pub fn of(&self, tier: Tier) -> &WindowConfig {
        match tier {
            Tier::National => &self.national,
            Tier::Prefecture => &self.prefecture,
            Tier::Cs => &self.cs,
        }
    }
}

impl Default for TierWindows {
    fn default() -> Self {
        TierWindows {
            national: default_national_window(),
            prefecture: default_prefecture_window(),
            cs: default_cs_window(),
        }
    }
}

/// One prefecture's own online end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PrefectureOnlineEnd {
    /// Prefecture code, "01" to "47".
    #[cfg_attr(feature = "schema", schemars(pattern(r"^(0[1-9]|[1-3][0-9]|4[0-7])$")))]
    pub prefecture: String,
    /// The prefectural server's online end, "HH:MM" (up to "29:59").
    #[cfg_attr(feature = "schema", schemars(pattern(r"^[0-2][0-9]:[0-5][0-9]$")))]
    pub online_end: String,
}

/// How often a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum BatchSchedule {
    /// Every open day, after the node's online operation ends.
    Daily,
    /// Once a week, on `weekday`.
    Weekly,
    /// Once a month, on `dayOfMonth` (the last day of a shorter month).
    Monthly,
}

/// What a weekly or monthly batch does when its day is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum ClosedDayPolicy {
    /// Do not run this time.
    #[default]
    Skip,
    /// Run on the nearest open day before (within the same week or month period).
    PreviousOpenDay,
    /// Run on the nearest open day after (within the same week or month period).
    NextOpenDay,
}

/// A batch run by every node of the listed tiers after its online operation ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct BatchConfig {
    /// Batch name: lowercase letters, digits and '-', at most 20 characters. The node service runs
    /// `juki-node batch NAME`.
    #[cfg_attr(
        feature = "schema",
        schemars(pattern(r"^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$"))
    )]
    pub name: String,
    /// Daily, Weekly or Monthly.
    pub schedule: BatchSchedule,
    /// The weekday of a Weekly batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekday: Option<WeekdayName>,
    /// The day of month (1–31) of a Monthly batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_month: Option<u8>,
    /// What a Weekly or Monthly batch does when its day is closed. Default Skip.
    #[serde(default)]
    pub closed_day_policy: ClosedDayPolicy,
    /// The tiers whose nodes run it. Default all three.
    #[serde(default = "all_tiers")]
    pub tiers: Vec<Tier>,
}

impl BatchConfig {
    /// A daily batch for every tier.
    pub fn daily(name: &str) -> Self {
        BatchConfig {
            name: name.into(),
            schedule: BatchSchedule::Daily,
            weekday: None,
            day_of_month: None,
            closed_day_policy: ClosedDayPolicy::Skip,
            tiers: all_tiers(),
        }
    }
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            time_zone: default_time_zone(),
            closed_weekdays: default_closed_weekdays(),
            national_holidays: true,
            closed_periods: default_closed_periods(),
            extra_closed_dates: Vec::new(),
            extra_open_dates: Vec::new(),
            online_windows: TierWindows::default(),
            prefecture_online_ends: Vec::new(),
            window_service: default_window_service(),
            batches: default_batches(),
        }
    }
}

fn default_time_zone() -> String {
    "Asia/Tokyo".into()
}
fn default_closed_weekdays() -> Vec<WeekdayName> {
    vec![WeekdayName::Saturday, WeekdayName::Sunday]
}
fn yes() -> bool {
    true
}
fn default_closed_periods() -> Vec<ClosedPeriod> {
    vec![ClosedPeriod {
        name: "year-end closure".into(),
        from: "12-29".into(),
        to: "01-03".into(),
    }]
}
fn default_national_window() -> WindowConfig {
    WindowConfig::new("07:00", "22:00")
}
fn default_prefecture_window() -> WindowConfig {
    WindowConfig::new("07:30", "21:30")
}
fn default_cs_window() -> WindowConfig {
    WindowConfig::new("08:00", "21:00")
}
fn default_window_service() -> WindowConfig {
    WindowConfig::new("09:00", "17:00")
}
fn default_batches() -> Vec<BatchConfig> {
    vec![
        BatchConfig::daily("statistics"),
        BatchConfig::daily("backup"),
    ]
}
fn all_tiers() -> Vec<Tier> {
    Tier::ALL.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_spec_takes_the_japanese_defaults() {
        let parsed: CalendarConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, CalendarConfig::default());
        assert_eq!(parsed.closed_periods[0].from, "12-29");
        assert_eq!(
            parsed
                .batches
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>(),
            ["statistics", "backup"]
        );
    }

    #[test]
    fn tiers_use_the_manifest_names() {
        assert_eq!(serde_json::to_string(&Tier::Cs).unwrap(), "\"CS\"");
        assert_eq!(
            serde_json::from_str::<Tier>("\"Prefecture\"").unwrap(),
            Tier::Prefecture
        );
    }
}

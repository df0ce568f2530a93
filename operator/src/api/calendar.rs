//! `OperatingCalendar`: the shared operating calendar (cluster-scoped).

use juki_calendar::CalendarConfig;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The operating calendar every tier follows: open days (weekends, national holidays computed from
/// the Act on National Holidays, the year-end closure and one-off dates), each tier's online window,
/// the window-service hours and the daily, weekly and monthly batches.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "jukinet.io",
    version = "v1alpha1",
    kind = "OperatingCalendar",
    doc = "The shared operating calendar of jukinet: open days, tier online windows, window-service hours and batches.",
    shortname = "opcal",
    category = "juki",
    status = "OperatingCalendarStatus",
    printcolumn(name = "TZ", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(name = "Today", type_ = "string", json_path = ".status.today.state"),
    printcolumn(
        name = "Next-Open",
        type_ = "string",
        json_path = ".status.nextOpenDay"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct OperatingCalendarSpec {
    #[serde(flatten)]
    pub calendar: CalendarConfig,
}

/// What the operator last computed from the calendar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatingCalendarStatus {
    /// Today in the calendar's time zone: open, or closed and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub today: Option<CalendarDay>,
    /// The next open day after today, "YYYY-MM-DD".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_open_day: Option<String>,
    /// Closed days in the coming weeks, with their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upcoming_closures: Vec<CalendarDay>,
    /// `Valid`: whether the spec passed validation; the message lists every error with its field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last spec that passed validation. While an edit leaves the calendar invalid, its nodes
    /// plan with this one, also after an operator restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_valid_spec: Option<CalendarConfig>,
}

/// One date and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalendarDay {
    /// "YYYY-MM-DD".
    pub date: String,
    /// "Open" or "Closed".
    pub state: String,
    /// Why it is closed (a weekday, a holiday's name, a closed period, a one-off reason).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

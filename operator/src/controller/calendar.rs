//! The OperatingCalendar status: today's state, the next open day, upcoming closures and a Valid
//! condition carrying every validation error. Recomputed at the calendar's next midnight.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::ToSpan;
use juki_calendar::{Calendar, DayStatus, TimeOfDay};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::{Context, Error};
use crate::api::{CalendarDay, OperatingCalendar, OperatingCalendarStatus};

/// How far ahead upcoming closures are listed.
const UPCOMING_DAYS: i32 = 31;

pub(super) async fn run(ctx: Arc<Context>) {
    Controller::new(
        Api::<OperatingCalendar>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .run(
        reconcile,
        |_, error, _| {
            tracing::warn!(%error, "OperatingCalendar reconcile failed; retrying");
            Requeue::requeue(Duration::from_secs(5))
        },
        ctx,
    )
    .for_each(|_| async {})
    .await;
}

fn day(date: jiff::civil::Date, status: &DayStatus) -> CalendarDay {
    match status {
        DayStatus::Open => CalendarDay {
            date: date.to_string(),
            state: "Open".into(),
            reason: String::new(),
        },
        DayStatus::Closed(_) => CalendarDay {
            date: date.to_string(),
            state: "Closed".into(),
            reason: status
                .to_string()
                .trim_start_matches("closed: ")
                .to_string(),
        },
    }
}

/// The status of a calendar on a date (pure).
pub(crate) fn status_of(
    object: &OperatingCalendar,
    today: jiff::civil::Date,
    now: jiff::Timestamp,
) -> OperatingCalendarStatus {
    let old = object.status.clone().unwrap_or_default();
    let mut status = OperatingCalendarStatus {
        observed_generation: object.metadata.generation,
        ..OperatingCalendarStatus::default()
    };
    let (valid, reason, message) = match Calendar::new(&object.spec.calendar) {
        Ok(calendar) => {
            status.today = Some(day(today, &calendar.day_status(today)));
            status.next_open_day = today
                .tomorrow()
                .ok()
                .and_then(|d| calendar.next_open_day(d, 366))
                .map(|d| d.to_string());
            status.upcoming_closures = (1..=UPCOMING_DAYS)
                .filter_map(|i| today.checked_add(i.days()).ok())
                .map(|d| (d, calendar.day_status(d)))
                .filter(|(_, s)| !s.is_open())
                .map(|(d, s)| day(d, &s))
                .collect();
            status.last_valid_spec = Some(object.spec.calendar.clone());
            (true, "Valid", "the calendar passed validation".to_string())
        }
        Err(errors) => {
            status.last_valid_spec = old.last_valid_spec.clone();
            (false, "Invalid", errors.to_string())
        }
    };
    let status_word = if valid { "True" } else { "False" };
    let previous = old.conditions.iter().find(|c| c.type_ == "Valid");
    let since = match previous {
        Some(c) if c.status == status_word => c.last_transition_time.clone(),
        _ => Time(now),
    };
    status.conditions = vec![Condition {
        type_: "Valid".into(),
        status: status_word.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: object.metadata.generation,
    }];
    status
}

async fn reconcile(object: Arc<OperatingCalendar>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    // An operator scoped to one namespace leaves other calendars to their own operators.
    if ctx.settings.namespace.is_some()
        && !ctx
            .nodes
            .state()
            .iter()
            .any(|n| Some(n.spec.calendar.as_str()) == object.metadata.name.as_deref())
    {
        return Ok(Requeue::requeue(ctx.settings.max_requeue));
    }
    let now = ctx.clock.now();
    let tz =
        jiff::tz::TimeZone::get(&object.spec.calendar.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let today = now.to_zoned(tz.clone()).date();
    let status = status_of(&object, today, now);
    let api: Api<OperatingCalendar> = Api::all(ctx.client.clone());
    super::patch_status(
        &api,
        &object.name_any(),
        object.status.as_ref(),
        &status,
        &ctx,
    )
    .await?;
    // Look again at the next midnight of the calendar's zone.
    let midnight = today.tomorrow().ok().and_then(|d| {
        let (_, h, m) = TimeOfDay::hm(0, 0)?.split();
        tz.to_timestamp(d.at(h, m, 0, 0)).ok()
    });
    let wait = midnight
        .map_or(ctx.settings.max_requeue, |at| ctx.clock.real_until(at))
        .min(ctx.settings.max_requeue);
    Ok(Requeue::requeue(wait.max(Duration::from_millis(50))))
}

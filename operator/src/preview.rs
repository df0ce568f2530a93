//! Text views of the calendar that need no cluster: the holiday list and the day-by-day preview
//! printed by `kubectl juki holidays` and `kubectl juki calendar`.

use std::fmt::Write;

use jiff::ToSpan;
use jiff::civil::Date;
use juki_calendar::{Calendar, Tier, holidays};

use serde::Deserialize;

use crate::api::{JukiNode, OperatingCalendar};
use crate::forecast::ForecastNode;

/// Language of holiday names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Ja,
    En,
}

/// One `YYYY-MM-DD,name` line per holiday of the years, inclusive.
pub fn holiday_lines(from_year: i16, to_year: i16, lang: Lang) -> String {
    let mut out = String::new();
    for year in from_year..=to_year {
        for (date, h) in holidays::holidays_in_year(year) {
            let name = if lang == Lang::Ja {
                h.name_ja
            } else {
                h.name_en
            };
            writeln!(out, "{date},{name}").unwrap();
        }
    }
    out
}

/// Why a calendar manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("no document of kind OperatingCalendar (apiVersion jukinet.io/v1alpha1) found")]
    NoCalendar,
    #[error("no document of kind JukiNode found")]
    NoNodes,
    #[error("JukiNode {name:?}: {message}")]
    InvalidNode { name: String, message: String },
    #[error("invalid OperatingCalendar {name:?}: {errors}")]
    Invalid {
        name: String,
        errors: juki_calendar::ValidationErrors,
    },
}

/// Finds the first OperatingCalendar in a (possibly multi-document) manifest and validates it.
pub fn calendar_from_manifest(text: &str) -> Result<(String, Calendar), ManifestError> {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("OperatingCalendar") {
            continue;
        }
        let resource: OperatingCalendar = serde_yaml::from_value(value)?;
        let name = resource.metadata.name.clone().unwrap_or_default();
        let calendar =
            Calendar::new(&resource.spec.calendar).map_err(|errors| ManifestError::Invalid {
                name: name.clone(),
                errors,
            })?;
        return Ok((name, calendar));
    }
    Err(ManifestError::NoCalendar)
}

/// Every JukiNode of a (possibly multi-document) manifest, as forecast nodes.
pub fn nodes_from_manifest(text: &str) -> Result<Vec<ForecastNode>, ManifestError> {
    let mut nodes = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("JukiNode") {
            continue;
        }
        let node: JukiNode = serde_yaml::from_value(value)?;
        let invalid = |message| ManifestError::InvalidNode {
            name: node.metadata.name.clone().unwrap_or_default(),
            message,
        };
        let (topology, online_end) =
            crate::topology::from_jukinode(&node, "default").map_err(invalid)?;
        nodes.push(ForecastNode {
            topology,
            online_end,
            replicas: node.spec.replicas,
        });
    }
    if nodes.is_empty() {
        Err(ManifestError::NoNodes)
    } else {
        Ok(nodes)
    }
}

/// One line per day: open or closed (and why), each tier's online window, the window-service
/// hours and the batches due. Prefectures with their own online end are listed after the tier.
pub fn calendar_lines(calendar: &Calendar, from: Date, days: i32) -> String {
    let mut out = String::new();
    for i in 0..days {
        let Ok(date) = from.checked_add(i.days()) else {
            break;
        };
        let weekday = date.strftime("%a");
        let status = calendar.day_status(date);
        if !status.is_open() {
            writeln!(out, "{date} {weekday} {status}").unwrap();
            continue;
        }
        let mut line = format!("{date} {weekday} open");
        for tier in Tier::ALL {
            write!(
                line,
                "  {} {}",
                tier.field(),
                calendar.daily_window(tier, None)
            )
            .unwrap();
            if tier == Tier::Prefecture {
                for (p, end) in calendar.prefecture_online_ends() {
                    write!(line, " [{p:02}: –{end}]").unwrap();
                }
            }
        }
        write!(line, "  window-service {}", calendar.daily_window_service()).unwrap();
        let batches: Vec<&str> = calendar
            .batch_runs(date)
            .iter()
            .map(|r| r.batch.name.as_str())
            .collect();
        if !batches.is_empty() {
            write!(line, "  batches {}", batches.join(",")).unwrap();
        }
        writeln!(out, "{line}").unwrap();
    }
    out
}

/// An instant from the command line: RFC 3339 (`2026-11-30T06:00:00+09:00`), or a date-time or a
/// date (midnight) in the given time zone.
pub fn parse_instant(text: &str, tz: &jiff::tz::TimeZone) -> Result<jiff::Timestamp, String> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    let civil = text
        .parse::<jiff::civil::DateTime>()
        .or_else(|_| text.parse::<Date>().map(|d| d.to_datetime(jiff::civil::Time::midnight())))
        .map_err(|_| format!("{text:?} is not an RFC 3339 instant, a YYYY-MM-DDTHH:MM date-time or a YYYY-MM-DD date"))?;
    tz.to_timestamp(civil).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn holiday_lines_are_date_comma_name() {
        let ja = holiday_lines(2026, 2026, Lang::Ja);
        assert!(
            ja.starts_with("2026-01-01,元日\n2026-01-12,成人の日\n"),
            "{ja}"
        );
        assert!(ja.contains("2026-09-22,国民の休日\n"));
        let en = holiday_lines(2026, 2026, Lang::En);
        assert!(en.contains("2026-05-06,Substitute Holiday\n"), "{en}");
        assert_eq!(ja.lines().count(), en.lines().count());
    }

    #[test]
    fn the_example_topology_has_seven_nodes_in_three_namespaces() {
        let nodes = nodes_from_manifest(include_str!("../../examples/topology.yaml")).unwrap();
        let names: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}/{}", n.topology.namespace, n.topology.name))
            .collect();
        assert_eq!(names.len(), 7);
        assert_eq!(names[0], "juki-national/national");
        assert_eq!(
            nodes[1].online_end.map(|t| t.to_string()).as_deref(),
            Some("21:45")
        );
        assert_eq!(nodes[2].topology.prefecture, Some(13));
        let err = nodes_from_manifest(
            "kind: JukiNode\nmetadata: {name: x}\nspec: {tier: CS, municipality: \"131017\"}\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"JukiNode "x": spec.municipality "131017": check digit is 7, expected 6"#
        );
    }

    #[test]
    fn a_manifest_without_a_calendar_is_refused() {
        let err = calendar_from_manifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no document of kind OperatingCalendar (apiVersion jukinet.io/v1alpha1) found"
        );
    }

    #[test]
    fn an_invalid_calendar_names_the_field() {
        let text = "apiVersion: jukinet.io/v1alpha1\nkind: OperatingCalendar\nmetadata: {name: bad}\nspec:\n  timeZone: Mars/Olympus\n";
        let err = calendar_from_manifest(text).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid OperatingCalendar "bad": timeZone: "Mars/Olympus" is not a known IANA time zone"#
        );
    }

    #[test]
    fn the_preview_shows_open_and_closed_days() {
        let text = "---\nkind: Namespace\n---\napiVersion: jukinet.io/v1alpha1\nkind: OperatingCalendar\nmetadata: {name: japan}\nspec:\n  prefectureOnlineEnds: [{prefecture: \"13\", onlineEnd: \"21:45\"}]\n  onlineWindows:\n    national: {start: \"07:00\", end: \"22:00\"}\n";
        let (name, cal) = calendar_from_manifest(text).unwrap();
        assert_eq!(name, "japan");
        let lines = calendar_lines(&cal, date(2026, 11, 20), 4);
        assert_eq!(
            lines,
            "2026-11-20 Fri open  national 07:00–22:00  prefecture 07:30–21:30 [13: –21:45]  cs 08:00–21:00  window-service 09:00–17:00  batches statistics,backup\n\
             2026-11-21 Sat closed: Saturday\n\
             2026-11-22 Sun closed: Sunday\n\
             2026-11-23 Mon closed: 勤労感謝の日 (Labor Thanksgiving Day)\n"
        );
    }
}

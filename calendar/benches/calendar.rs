//! Figures for the calendar: every holiday 1948–2150, and one year of transitions for the whole
//! country (47 prefectures, each with its own online end).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use juki_calendar::config::PrefectureOnlineEnd;
use juki_calendar::{Calendar, CalendarConfig, Scope, Tier, holidays};

fn all_holidays(c: &mut Criterion) {
    c.bench_function("holidays 1948-2150", |b| {
        b.iter(|| {
            (1948..=2150)
                .map(|y| holidays::holidays_in_year(black_box(y)).len())
                .sum::<usize>()
        })
    });
}

fn country_year_of_transitions(c: &mut Criterion) {
    // Prefecture ends spread from 21:30 to 22:00 so every prefecture has its own transitions.
    let config = CalendarConfig {
        prefecture_online_ends: (1..=47)
            .map(|p| PrefectureOnlineEnd {
                prefecture: format!("{p:02}"),
                online_end: format!("21:{:02}", 30 + (p % 30)),
            })
            .collect(),
        ..CalendarConfig::default()
    };
    let calendar = Calendar::new(&config).unwrap();
    let mut scopes = vec![
        Scope::Online(Tier::National, None),
        Scope::Online(Tier::Cs, None),
        Scope::WindowService,
    ];
    scopes.extend((1..=47).map(|p| Scope::Online(Tier::Prefecture, Some(p))));
    let from: Timestamp = "2026-01-01T00:00:00+09:00".parse().unwrap();
    let to: Timestamp = "2027-01-01T00:00:00+09:00".parse().unwrap();
    let count = calendar.transitions(from, to, &scopes).count();
    println!("one year, 47 prefectures: {count} transitions");
    c.bench_function("transitions 2026, 47 prefectures", |b| {
        b.iter(|| calendar.transitions(black_box(from), to, &scopes).count())
    });
}

criterion_group!(benches, all_holidays, country_year_of_transitions);
criterion_main!(benches);

//! Search quality on the Japanese seed: the labelled queries of `data/queries.json` (written in
//! other words than the tickets, some in half-width katakana or with other kana) and recall@5,
//! reported and held to a floor. Also: suggestions for a draft, and the seed itself is valid.

mod common;

use common::{Backend, TestDb};
use juki_callcenter::domain::Caller;
use juki_callcenter::domain::ticket::TicketInput;

#[actix_web::test]
async fn seed_tickets_are_valid_and_distinct() {
    let seed = juki_callcenter::seed::tickets();
    assert!(seed.len() >= 30);
    let mut keys: Vec<&str> = seed.iter().map(|s| s.key.as_str()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), seed.len(), "seed keys are unique");
    for s in &seed {
        let channel = if s.channel == "alert" {
            "terminal"
        } else {
            s.channel.as_str()
        };
        TicketInput {
            kind: s.kind.clone(),
            org: s.org.clone(),
            reporter: s.reporter.clone(),
            channel: channel.into(),
            subject: s.subject.clone(),
            body: s.body.clone(),
            nodes: s.nodes.clone(),
            category: Some(s.category.clone()),
        }
        .validate()
        .unwrap_or_else(|e| panic!("seed {}: {e}", s.key));
        assert!(!s.answer.trim().is_empty());
    }
    for q in juki_callcenter::seed::queries() {
        for r in &q.relevant {
            assert!(
                keys.contains(&r.as_str()),
                "query {:?} names unknown seed {r}",
                q.q
            );
        }
    }
}

#[actix_web::test]
async fn recall_at_5_on_the_labelled_japanese_queries() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let (cc, _clock) = db.service().await;
    let ids = juki_callcenter::seed::load(&cc).await.unwrap();
    assert_eq!(ids.len(), juki_callcenter::seed::tickets().len());
    assert_eq!(cc.index.len(), ids.len() as u64);
    let key_of = |id: i64| {
        ids.iter()
            .find(|(_, i)| *i == id)
            .map(|(k, _)| k.clone())
            .unwrap()
    };
    let staff = Caller::Staff("eval".into());
    let queries = juki_callcenter::seed::queries();
    let (mut sum, mut hits_at_1) = (0.0, 0);
    let mut misses = Vec::new();
    for q in &queries {
        let hits = cc.search(&staff, &q.q, Some(5)).await.unwrap();
        let top: Vec<String> = hits.iter().map(|h| key_of(h.ticket_id)).collect();
        let found = q.relevant.iter().filter(|r| top.contains(r)).count();
        sum += found as f64 / q.relevant.len() as f64;
        if top.first().is_some_and(|t| q.relevant.contains(t)) {
            hits_at_1 += 1;
        }
        if found < q.relevant.len() {
            misses.push(format!("{:?}: want {:?}, top5 {:?}", q.q, q.relevant, top));
        }
    }
    let recall = sum / queries.len() as f64;
    eprintln!(
        "search quality: {} labelled queries, recall@5 = {recall:.3}, precision@1 = {:.3}",
        queries.len(),
        hits_at_1 as f64 / queries.len() as f64
    );
    for m in &misses {
        eprintln!("  partial: {m}");
    }
    assert!(recall >= 0.9, "recall@5 {recall:.3} below 0.9");
}

#[actix_web::test]
async fn suggestions_for_a_draft_come_from_answered_tickets_the_caller_may_read() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let (cc, _clock) = db.service().await;
    let ids = juki_callcenter::seed::load(&cc).await.unwrap();
    let id = |key: &str| ids.iter().find(|(k, _)| k == key).unwrap().1;
    let staff = Caller::Staff("eval".into());
    let draft = "ｻｰﾊﾞ証明書の有効期限が切れて、都道府県サーバへの通信が失敗しています";
    let hits = cc.suggest(&staff, draft, Some(3), None).await.unwrap();
    let top: Vec<i64> = hits.iter().map(|h| h.ticket_id).collect();
    assert!(top.contains(&id("cert-expired")), "{top:?}");
    assert!(hits[0].answer.is_some());
    // A municipality sees only its own: 新宿区 (131041) filed cert-expired; 千代田区 did not.
    let chiyoda = Caller::Municipality("131016".into());
    let hits = cc.suggest(&chiyoda, draft, Some(5), None).await.unwrap();
    assert!(hits.iter().all(|h| h.ticket_id != id("cert-expired")));
    let shinjuku = Caller::Municipality("131041".into());
    let hits = cc.suggest(&shinjuku, draft, Some(5), None).await.unwrap();
    assert_eq!(hits.first().map(|h| h.ticket_id), Some(id("cert-expired")));
    // Loading again leaves a database with tickets alone.
    assert!(juki_callcenter::seed::load(&cc).await.unwrap().is_empty());
}

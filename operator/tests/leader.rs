//! Leader election against a real control plane (`bash tests/cluster/up.sh`, then
//! `source tests/cluster/env.sh` so KUBECONFIG points at it).
//!
//! Without a reachable API server each test prints why and passes, unless
//! `JUKINET_REQUIRE_CLUSTER=1`, when it fails instead. Every test works on its own, freshly
//! named Lease in namespace `default` and deletes it at the end, so tests may run in parallel
//! and beside other users of the same cluster.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use juki_operator::leader::{LeaderElector, LeaderLost};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, DeleteParams};

const NAMESPACE: &str = "default";
const SKIP: &str = "skipped: no control plane running (start one with `bash tests/cluster/up.sh`)";

/// A client for the local control plane, or `None` (after printing why) when there is none.
async fn cluster() -> Option<Client> {
    let required = std::env::var("JUKINET_REQUIRE_CLUSTER").is_ok_and(|v| v == "1");
    let client = match tokio::time::timeout(Duration::from_secs(10), Client::try_default()).await {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => return skip(required, &format!("no client: {err}")),
        Err(_) => return skip(required, "creating a client timed out"),
    };
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => Some(client),
        Ok(Err(err)) => skip(required, &format!("API server did not answer: {err}")),
        Err(_) => skip(required, "API server did not answer within 10 s"),
    }
}

fn skip(required: bool, why: &str) -> Option<Client> {
    if required {
        panic!("{SKIP} ({why}); JUKINET_REQUIRE_CLUSTER=1 demands one");
    }
    eprintln!("{SKIP} ({why})");
    println!("{SKIP}");
    None
}

fn fresh_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn elector(client: &Client, lease: &str, identity: &str, lease_s: u64) -> LeaderElector {
    LeaderElector::new(client.clone(), NAMESPACE, lease, identity)
        .with_durations(Duration::from_secs(lease_s), Duration::from_secs(1))
}

/// Runs `body`, deletes the leases whatever happened, then re-raises a panic of `body`.
async fn with_cleanup<F>(client: &Client, leases: &[String], body: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(body).await;
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    for lease in leases {
        let _ = api.delete(lease, &DeleteParams::default()).await;
    }
    if let Err(err) = outcome {
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
        panic!("test task failed: {err}");
    }
}

async fn holder(client: &Client, lease: &str) -> (Option<String>, Option<i32>) {
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let spec = api.get(lease).await.unwrap().spec.unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions)
}

#[tokio::test]
async fn leader_second_replica_waits_until_the_first_releases() {
    let Some(client) = cluster().await else {
        return;
    };
    let name = fresh_name("juki-leader-release");
    let (c, n) = (client.clone(), name.clone());
    with_cleanup(&client, &[name], async move {
        let a = elector(&c, &n, "a", 3);
        let b = elector(&c, &n, "b", 3);

        tokio::time::timeout(Duration::from_secs(10), a.acquire())
            .await
            .expect("a acquires a fresh lease at once")
            .unwrap();
        assert_eq!(holder(&c, &n).await, (Some("a".into()), Some(0)));

        // a keeps renewing; b must not get in, not even after more than one lease duration.
        let keeper = tokio::spawn({
            let a = a.clone();
            async move { a.keep().await }
        });
        assert!(
            tokio::time::timeout(Duration::from_secs(2), b.acquire())
                .await
                .is_err(),
            "b acquired a lease that a holds"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !b.try_acquire().await.unwrap(),
            "a's renewals keep the lease"
        );
        assert_eq!(holder(&c, &n).await.0.as_deref(), Some("a"));

        // Graceful hand-over: a stops renewing and releases, b takes over well before expiry.
        keeper.abort();
        a.release().await;
        assert_eq!(holder(&c, &n).await.0, None);
        tokio::time::timeout(Duration::from_secs(5), b.acquire())
            .await
            .expect("b acquires within a few seconds of a's release")
            .unwrap();
        assert_eq!(holder(&c, &n).await, (Some("b".into()), Some(1)));

        // a no longer leads: its keep() notices within a renewal interval.
        let lost = tokio::time::timeout(Duration::from_secs(5), a.keep())
            .await
            .expect("keep() reports the loss promptly");
        assert!(
            matches!(&lost, Err(LeaderLost::TakenBy { holder, .. }) if holder == "b"),
            "{lost:?}"
        );

        // Releasing a lease we do not hold changes nothing.
        a.release().await;
        assert_eq!(holder(&c, &n).await.0.as_deref(), Some("b"));
    })
    .await;
}

#[tokio::test]
async fn leader_expired_lease_is_taken_over_without_release() {
    let Some(client) = cluster().await else {
        return;
    };
    let name = fresh_name("juki-leader-expiry");
    let (c, n) = (client.clone(), name.clone());
    with_cleanup(&client, &[name], async move {
        let a = elector(&c, &n, "a", 1);
        let b = elector(&c, &n, "b", 1);
        assert!(a.try_acquire().await.unwrap());
        assert!(!b.try_acquire().await.unwrap());
        // a "crashes": no renewals, no release. After 1 s + margin the lease is b's.
        tokio::time::timeout(Duration::from_secs(6), b.acquire())
            .await
            .expect("b takes the expired lease")
            .unwrap();
        assert_eq!(holder(&c, &n).await, (Some("b".into()), Some(1)));
    })
    .await;
}

#[tokio::test]
async fn leader_concurrent_contenders_never_both_win() {
    let Some(client) = cluster().await else {
        return;
    };
    let names: Vec<String> = (0..5)
        .map(|i| fresh_name(&format!("juki-leader-race{i}")))
        .collect();
    let (c, ns) = (client.clone(), names.clone());
    with_cleanup(&client, &names, async move {
        for n in &ns {
            let a = elector(&c, n, "a", 15);
            let b = elector(&c, n, "b", 15);
            // Race on creating the lease.
            let (wa, wb) = tokio::join!(a.try_acquire(), b.try_acquire());
            let (wa, wb) = (wa.unwrap(), wb.unwrap());
            assert!(wa ^ wb, "exactly one creator wins: a={wa} b={wb}");
            let winner = if wa { &a } else { &b };
            // Race on taking a released lease (both replace with the same resourceVersion).
            winner.release().await;
            let (wa, wb) = tokio::join!(a.try_acquire(), b.try_acquire());
            let (wa, wb) = (wa.unwrap(), wb.unwrap());
            assert!(!(wa && wb), "both took the released lease");
            let (held_by, _) = holder(&c, n).await;
            assert!(held_by.is_some(), "somebody holds it");
        }
    })
    .await;
}

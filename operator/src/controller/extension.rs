//! The ServiceExtension status: Pending, Active, Expired or Rejected with a reason. The node
//! controller reads the same evaluation to keep the covered nodes up.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::view::Topology;
use super::{Context, Error};
use crate::api::{ExtensionPhase, ServiceExtension, ServiceExtensionStatus};
use crate::service_extension::evaluate;

pub(super) async fn run(ctx: Arc<Context>) {
    Controller::new(
        ctx.settings.api::<ServiceExtension>(&ctx.client),
        watcher::Config::default(),
    )
    .run(
        reconcile,
        |_, error, _| {
            tracing::warn!(%error, "ServiceExtension reconcile failed; retrying");
            Requeue::requeue(Duration::from_secs(5))
        },
        ctx,
    )
    .for_each(|_| async {})
    .await;
}

async fn reconcile(object: Arc<ServiceExtension>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let now = ctx.clock.now();
    let ns = object.namespace().unwrap_or_default();
    let topology = Topology::read(&ctx);
    // Extensions are judged against the calendar of the first node they name.
    let calendar_name = object
        .spec
        .nodes
        .first()
        .and_then(|r| topology.index_of(r.namespace.as_deref().unwrap_or(&ns), &r.name))
        .map_or_else(|| "japan".to_string(), |i| topology.calendars[i].clone());
    // As the nodes do: judged against the last valid calendar while an edit is invalid.
    let (phase, reason, message, next) = match ctx.last_valid.calendar(&ctx, &calendar_name) {
        Ok((calendar, _, _)) => {
            let e = evaluate(
                &object.spec,
                &ns,
                &calendar,
                &topology.nodes,
                &topology.resolved,
                &topology.online_ends,
                now,
            );
            (e.phase, e.reason, e.message, e.next_change)
        }
        Err(message) => (
            ExtensionPhase::Rejected,
            "CalendarUnavailable",
            message,
            None,
        ),
    };
    let old = object.status.clone().unwrap_or_default();
    let active = phase == ExtensionPhase::Active;
    let since = match old.conditions.iter().find(|c| c.type_ == "Active") {
        Some(c) if (c.status == "True") == active => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let status = ServiceExtensionStatus {
        phase: Some(phase),
        reason: Some(reason.into()),
        message: Some(message.clone()),
        conditions: vec![Condition {
            type_: "Active".into(),
            status: if active { "True" } else { "False" }.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: object.metadata.generation,
        }],
        observed_generation: object.metadata.generation,
    };
    let api: Api<ServiceExtension> = Api::namespaced(ctx.client.clone(), &ns);
    super::patch_status(
        &api,
        &object.name_any(),
        object.status.as_ref(),
        &status,
        &ctx,
    )
    .await?;
    let wait = next
        .map_or(ctx.settings.max_requeue, |at| ctx.clock.real_until(at))
        .min(ctx.settings.max_requeue);
    Ok(Requeue::requeue(wait.max(Duration::from_millis(50))))
}

//! The Kubernetes objects the operator owns for a JukiNode, built as pure functions: a ConfigMap
//! with the rendered calendar and node configuration, a Service, a Deployment of the node service,
//! and the daily batch Jobs.

use std::collections::BTreeMap;

use jiff::civil::Date;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde_json::json;

use crate::api::{ClaimPolicy, DatabaseKind, JukiNode};

/// The node service's HTTP port.
pub const PORT: i32 = 8080;
/// Label carrying the JukiNode name on everything the operator creates.
pub const NODE_LABEL: &str = "jukinet.io/node";
/// Label naming the batch of a Job.
pub const BATCH_LABEL: &str = "jukinet.io/batch";
/// Label carrying the operating date of a Job (YYYYMMDD).
pub const DATE_LABEL: &str = "jukinet.io/operating-date";
/// Label carrying the JukiNode name on a batch Job's pods, which must not carry [`NODE_LABEL`]:
/// that is the selector of the node's Service, which would then route requests to a batch pod
/// (and keep its endpoints up to date as each of the day's 3,600 batch pods comes and goes).
pub const BATCH_OF_LABEL: &str = "jukinet.io/batch-of";
/// The field manager of every server-side apply.
pub const MANAGER: &str = "juki-operator";
/// Where a node's TLS Secret is mounted (`spec.tls`).
pub const TLS_DIR: &str = "/etc/juki-tls";
/// Where a batch Job mounts the node's backups volume (`JUKI_BACKUP_DIR`).
pub const BACKUP_DIR: &str = "/var/lib/juki-backups";
/// Label carrying a node's prefecture code ("01".."47"; none on the national node).
pub const PREFECTURE_LABEL: &str = "jukinet.io/prefecture";
/// The node service's opt-in to plain HTTP on a pod address (juki-node's --insecure-plain-http).
pub const INSECURE_PLAIN_HTTP_ENV: &str = "JUKI_INSECURE_PLAIN_HTTP";
/// Where a node's pods export their spans (the operator's own `--otlp-endpoint`).
pub const OTLP_ENDPOINT_ENV: &str = juki_telemetry::ENDPOINT_ENV;

/// The URL at which the tier below and the operator reach a node's Service.
pub fn service_url(name: &str, namespace: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{name}.{namespace}.svc:{PORT}")
}

/// Where the embedded SQLite database lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteVolume {
    /// A PersistentVolumeClaim per node (production).
    Pvc,
    /// An emptyDir (clusters without storage, e.g. the local kwok control plane).
    EmptyDir,
}

/// What the builders need besides the node itself.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The OperatingCalendar spec, as JSON, rendered into the ConfigMap.
    pub calendar_json: &'a serde_json::Value,
    /// The ServiceExtensions that keep this node up (not expired), as the node service reads
    /// them (`extensions.json`: a list of {name, kind, nodes, date, endTime}).
    pub extensions_json: &'a serde_json::Value,
    /// The upstream's Service URL, if any.
    pub upstream_url: Option<String>,
    pub sqlite_volume: SqliteVolume,
    /// The operator's clock when it is not the real one (`fast:SHOWN@REAL,xFACTOR`), so that
    /// the node judges its online windows on the same clock; None in production.
    pub node_clock: Option<String>,
    /// `--delivery-keys`: the Ed25519 public keys (hex, comma-separated) whose signature a
    /// delivery needs before the node stages it; None: not checked.
    pub delivery_keys: Option<String>,
    /// The collector the node services export their spans to (OTLP base URL, given to their
    /// pods as `OTEL_EXPORTER_OTLP_ENDPOINT`); None: they export none.
    pub otlp_endpoint: Option<String>,
}

fn name(node: &JukiNode) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

/// Labels of everything owned by the node (and the selector of its pods).
pub fn labels(node: &JukiNode) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "juki-node".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGER.to_string(),
        ),
        (NODE_LABEL.to_string(), name(node)),
        (
            "jukinet.io/tier".to_string(),
            node.spec.tier.as_str().to_string(),
        ),
    ]);
    // The charts' NetworkPolicies admit a prefecture's own CSs by it.
    if let Some(code) = node.spec.prefecture_code() {
        labels.insert(PREFECTURE_LABEL.to_string(), code.to_string());
    }
    labels
}

fn meta(node: &JukiNode, name: String) -> ObjectMeta {
    let owner: Option<OwnerReference> = node.controller_owner_ref(&());
    ObjectMeta {
        name: Some(name),
        namespace: node.metadata.namespace.clone(),
        labels: Some(labels(node)),
        owner_references: owner.map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The ConfigMap with the calendar and the node's configuration, read by the node service.
pub fn config_map(node: &JukiNode, ctx: &Context<'_>) -> ConfigMap {
    let spec = &node.spec;
    let mut node_config = json!({
        "name": name(node),
        "role": spec.tier.as_str(),
        "prefecture": spec.prefecture.clone().or_else(|| spec.municipality.as_ref().map(|m| m[..2].to_string())),
        "municipality": spec.municipality,
        "onlineEnd": spec.online_end,
        "upstreamUrl": ctx.upstream_url,
        "listen": format!("0.0.0.0:{PORT}"),
    });
    if let Some(clock) = &ctx.node_clock {
        node_config["clock"] = json!(clock);
    }
    if let Some(keys) = &ctx.delivery_keys {
        node_config["deliveryKeys"] = json!(keys);
    }
    ConfigMap {
        metadata: meta(node, format!("{}-config", name(node))),
        data: Some(BTreeMap::from([
            (
                "calendar.json".to_string(),
                serde_json::to_string_pretty(ctx.calendar_json).unwrap_or_default(),
            ),
            (
                "node.json".to_string(),
                serde_json::to_string_pretty(&node_config).unwrap_or_default(),
            ),
            (
                "extensions.json".to_string(),
                serde_json::to_string_pretty(ctx.extensions_json).unwrap_or_default(),
            ),
        ])),
        ..ConfigMap::default()
    }
}

/// The node's Service: how the tier below and the operator reach it.
pub fn service(node: &JukiNode) -> Service {
    Service {
        metadata: meta(node, name(node)),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(NODE_LABEL.to_string(), name(node))])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: PORT,
                target_port: Some(IntOrString::Int(PORT)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The PersistentVolumeClaim of the embedded database (only with [`SqliteVolume::Pvc`]). The
/// residents' records outlive their node unless `whenDeleted: Delete`: only then does the claim
/// point back to the node, for the garbage collector.
pub fn data_claim(node: &JukiNode) -> PersistentVolumeClaim {
    let sqlite = &node.spec.database.sqlite;
    let size = (&sqlite.storage_size, sqlite.storage_class_name.as_ref());
    claim(node, "data", size, sqlite.when_deleted)
}

/// The PersistentVolumeClaim of the node's backups (only with [`SqliteVolume::Pvc`]), for any
/// database: a volume of its own, kept like the data unless `whenDeleted: Delete`.
pub fn backups_claim(node: &JukiNode) -> PersistentVolumeClaim {
    let backups = &node.spec.backups;
    let size = (&backups.storage_size, backups.storage_class_name.as_ref());
    claim(node, "backups", size, backups.when_deleted)
}

/// Claim `<node>-<what>` of `size` (and storage class), owned by the node only when its
/// policy is `Delete`.
fn claim(
    node: &JukiNode,
    what: &str,
    (size, class): (&String, Option<&String>),
    when_deleted: ClaimPolicy,
) -> PersistentVolumeClaim {
    let mut metadata = meta(node, format!("{}-{what}", name(node)));
    if when_deleted == ClaimPolicy::Retain {
        metadata.owner_references = None;
    }
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: class.cloned(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// Claim `claim` with [`SqliteVolume::Pvc`], else an emptyDir (clusters without a storage
/// provisioner: the content goes with the pod).
fn volume_of(kind: SqliteVolume, claim: String) -> Volume {
    match kind {
        SqliteVolume::Pvc => Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: None,
            }),
            ..Volume::default()
        },
        SqliteVolume::EmptyDir => Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    }
}

/// Volumes, mounts and environment shared by the service and its batch Jobs.
fn pod_parts(node: &JukiNode, ctx: &Context<'_>) -> (Vec<Volume>, Vec<VolumeMount>, Vec<EnvVar>) {
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: format!("{}-config", name(node)),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: "/etc/juki".into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut env = vec![EnvVar {
        name: "JUKI_CONFIG".into(),
        value: Some("/etc/juki/node.json".into()),
        ..EnvVar::default()
    }];
    if let Some(endpoint) = &ctx.otlp_endpoint {
        env.push(EnvVar {
            name: OTLP_ENDPOINT_ENV.into(),
            value: Some(endpoint.clone()),
            ..EnvVar::default()
        });
    }
    match (node.spec.database.kind, &node.spec.database.postgres) {
        (DatabaseKind::Postgres, Some(pg)) => env.push(EnvVar {
            name: "DATABASE_URL".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: pg.url_secret_ref.name.clone(),
                    key: pg.url_secret_ref.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }),
        _ => {
            volumes.push(Volume {
                name: "data".into(),
                ..volume_of(ctx.sqlite_volume, format!("{}-data", name(node)))
            });
            mounts.push(VolumeMount {
                name: "data".into(),
                mount_path: "/var/lib/juki".into(),
                ..VolumeMount::default()
            });
            env.push(EnvVar {
                name: "DATABASE_URL".into(),
                value: Some("sqlite:///var/lib/juki/juki.db".into()),
                ..EnvVar::default()
            });
        }
    }
    (volumes, mounts, env)
}

/// The uid and gid of the juki-node image's user (docker/juki-node.Dockerfile).
const NODE_USER: i64 = 65532;

/// The node's pods run as the image's non-root user, group-owning their volumes, with no
/// privilege to gain: the "restricted" Pod Security Standard, so they run in a namespace that
/// enforces it.
fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NODE_USER),
        run_as_group: Some(NODE_USER),
        fs_group: Some(NODE_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// A probe of a public route (with TLS over HTTPS: the kubelet shows no client certificate,
/// which the node accepts on its probes).
fn probe(path: &str, tls: bool) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(PORT),
            scheme: tls.then(|| "HTTPS".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    }
}

/// The Deployment of the node service, with the given replicas.
pub fn deployment(node: &JukiNode, ctx: &Context<'_>, replicas: i32) -> Deployment {
    let (mut volumes, mut mounts, mut env) = pod_parts(node, ctx);
    let tls = node.spec.tls.as_ref();
    if let Some(tls) = tls {
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        for (var, file) in [
            ("JUKI_TLS_CERT", "tls.crt"),
            ("JUKI_TLS_KEY", "tls.key"),
            ("JUKI_TLS_CA", "ca.crt"),
        ] {
            env.push(EnvVar {
                name: var.into(),
                value: Some(format!("{TLS_DIR}/{file}")),
                ..EnvVar::default()
            });
        }
    } else {
        // The node refuses plain HTTP off loopback unless told; the operator plans a node
        // without spec.tls only when it was started with --allow-plain-http.
        env.push(EnvVar {
            name: INSECURE_PLAIN_HTTP_ENV.into(),
            value: Some("true".into()),
            ..EnvVar::default()
        });
    }
    let selector = BTreeMap::from([(NODE_LABEL.to_string(), name(node))]);
    Deployment {
        metadata: meta(node, name(node)),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            // One database file: never two writers at once.
            strategy: Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(node)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "juki-node".into(),
                        image: Some(node.spec.template.image.clone()),
                        args: Some(vec!["serve".into()]),
                        env: Some(env),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: PORT,
                            ..ContainerPort::default()
                        }]),
                        readiness_probe: Some(probe("/readyz", tls.is_some())),
                        liveness_probe: Some(probe("/healthz", tls.is_some())),
                        resources: node.spec.template.resources.clone(),
                        volume_mounts: Some(mounts),
                        security_context: Some(container_security()),
                        ..Container::default()
                    }],
                    volumes: Some(volumes),
                    security_context: Some(pod_security()),
                    node_selector: node.spec.template.node_selector.clone(),
                    tolerations: node.spec.template.tolerations.clone(),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The Job name of a batch: node, batch and operating date, so it runs once per day even across
/// operator restarts. Long node names are shortened with a hash to stay within 63 characters.
pub fn job_name(node: &str, batch: &str, date: Date) -> String {
    let suffix = format!("-{batch}-{}", date.strftime("%Y%m%d"));
    if node.len() + suffix.len() <= 63 {
        return format!("{node}{suffix}");
    }
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = node.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let keep = 63 - suffix.len() - 9;
    format!(
        "{}-{:08x}{suffix}",
        node[..keep].trim_end_matches('-'),
        hash as u32
    )
}

/// A daily batch Job: `juki-node batch NAME --date DATE` with the node's image and database.
pub fn batch_job(node: &JukiNode, ctx: &Context<'_>, batch: &str, date: Date) -> Job {
    let (mut volumes, mut mounts, mut env) = pod_parts(node, ctx);
    // Every batch sees the backups volume (a `backup` writes there, a restore reads there).
    volumes.push(Volume {
        name: "backups".into(),
        ..volume_of(ctx.sqlite_volume, format!("{}-backups", name(node)))
    });
    mounts.push(VolumeMount {
        name: "backups".into(),
        mount_path: BACKUP_DIR.into(),
        ..VolumeMount::default()
    });
    env.push(EnvVar {
        name: "JUKI_BACKUP_DIR".into(),
        value: Some(BACKUP_DIR.into()),
        ..EnvVar::default()
    });
    let mut metadata = meta(node, job_name(&name(node), batch, date));
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(BATCH_LABEL.into(), batch.into());
    labels.insert(DATE_LABEL.into(), date.strftime("%Y%m%d").to_string());
    // Nor managed-by: the operator follows a batch through its Job, not its pods.
    let mut pod_labels = labels.clone();
    pod_labels.remove(NODE_LABEL);
    pod_labels.remove("app.kubernetes.io/managed-by");
    pod_labels.insert(BATCH_OF_LABEL.into(), name(node));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            ttl_seconds_after_finished: Some(3 * 24 * 3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "batch".into(),
                        image: Some(node.spec.template.image.clone()),
                        args: Some(vec![
                            "batch".into(),
                            batch.into(),
                            "--date".into(),
                            date.to_string(),
                        ]),
                        env: Some(env),
                        resources: node.spec.template.resources.clone(),
                        volume_mounts: Some(mounts),
                        security_context: Some(container_security()),
                        ..Container::default()
                    }],
                    volumes: Some(volumes),
                    security_context: Some(pod_security()),
                    node_selector: node.spec.template.node_selector.clone(),
                    tolerations: node.spec.template.tolerations.clone(),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JukiNodeSpec;
    use jiff::civil::date;

    fn cs() -> JukiNode {
        let spec: JukiNodeSpec =
            serde_json::from_value(json!({"tier": "CS", "municipality": "131016"})).unwrap();
        let mut node = JukiNode::new("cs-131016", spec);
        node.metadata.namespace = Some("juki-pref-13".into());
        node.metadata.uid = Some("uid-1".into());
        node
    }

    #[test]
    fn pods_carry_the_tier_and_prefecture_the_network_policies_select_by() {
        let of = |tier: &str, extra: serde_json::Value| {
            let mut spec = json!({"tier": tier});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            labels(&JukiNode::new("n", serde_json::from_value(spec).unwrap()))
        };
        let cs = of("CS", json!({"municipality": "131016"}));
        assert_eq!(cs["jukinet.io/tier"], "CS");
        assert_eq!(cs[PREFECTURE_LABEL], "13");
        let prefecture = of("Prefecture", json!({"prefecture": "27"}));
        assert_eq!(prefecture[PREFECTURE_LABEL], "27");
        assert!(!of("National", json!({})).contains_key(PREFECTURE_LABEL));
    }

    #[test]
    fn the_residents_claim_outlives_its_node_unless_deletion_is_asked_for() {
        let mut node = cs();
        let claim = data_claim(&node);
        assert_eq!(claim.metadata.name.as_deref(), Some("cs-131016-data"));
        assert_eq!(claim.metadata.owner_references, None);
        assert_eq!(
            claim.metadata.labels.as_ref().unwrap()[NODE_LABEL],
            "cs-131016"
        );
        node.spec.database.sqlite.when_deleted = ClaimPolicy::Delete;
        let owner = data_claim(&node).metadata.owner_references.unwrap();
        assert_eq!(
            (owner[0].kind.as_str(), owner[0].name.as_str()),
            ("JukiNode", "cs-131016")
        );
    }

    #[test]
    fn batches_write_backups_to_a_claim_of_their_own_whatever_the_database() {
        let mut node = cs();
        let (calendar, extensions) = (json!({}), json!([]));
        let ctx = |sqlite_volume| Context {
            calendar_json: &calendar,
            extensions_json: &extensions,
            upstream_url: None,
            node_clock: None,
            delivery_keys: None,
            otlp_endpoint: None,
            sqlite_volume,
        };
        for kind in [DatabaseKind::Sqlite, DatabaseKind::Postgres] {
            node.spec.database = serde_json::from_value(json!({
                "kind": kind, "postgres": {"urlSecretRef": {"name": "db", "key": "url"}},
            }))
            .unwrap();
            let job = batch_job(&node, &ctx(SqliteVolume::Pvc), "backup", date(2026, 11, 30));
            let pod = job.spec.unwrap().template.spec.unwrap();
            let claims: Vec<String> = pod
                .volumes
                .unwrap()
                .into_iter()
                .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
                .collect();
            let mut expected = vec!["cs-131016-backups".to_string()];
            if kind == DatabaseKind::Sqlite {
                expected.insert(0, "cs-131016-data".into());
            }
            assert_eq!(claims, expected, "{kind:?}");
            let container = &pod.containers[0];
            let mount = container.volume_mounts.as_ref().unwrap();
            let backups = mount.iter().find(|m| m.name == "backups").unwrap();
            assert_eq!(backups.mount_path, BACKUP_DIR);
            let env = container.env.as_ref().unwrap();
            let dir = env.iter().find(|e| e.name == "JUKI_BACKUP_DIR");
            assert_eq!(dir.and_then(|e| e.value.as_deref()), Some(BACKUP_DIR));
            // Not where the database is: a lost data volume keeps its backups.
            assert!(!BACKUP_DIR.starts_with("/var/lib/juki/"));
        }
        // The claim: the spec's size, kept with the node gone unless asked otherwise.
        node.spec.backups.storage_size = "5Gi".into();
        let claim = backups_claim(&node);
        assert_eq!(claim.metadata.name.as_deref(), Some("cs-131016-backups"));
        assert_eq!(claim.metadata.owner_references, None);
        let requests = claim.spec.unwrap().resources.unwrap().requests.unwrap();
        assert_eq!(requests["storage"], Quantity("5Gi".into()));
        node.spec.backups.when_deleted = ClaimPolicy::Delete;
        assert!(backups_claim(&node).metadata.owner_references.is_some());
        // Without a provisioner (kwok clusters) the volume goes with the pod.
        let job = batch_job(
            &node,
            &ctx(SqliteVolume::EmptyDir),
            "backup",
            date(2026, 11, 30),
        );
        let volumes = job.spec.unwrap().template.spec.unwrap().volumes.unwrap();
        let backups = volumes.iter().find(|v| v.name == "backups").unwrap();
        assert!(backups.empty_dir.is_some() && backups.persistent_volume_claim.is_none());
    }

    #[test]
    fn job_names_carry_node_batch_and_date_within_63_characters() {
        assert_eq!(
            job_name("cs-131016", "statistics", date(2026, 11, 30)),
            "cs-131016-statistics-20261130"
        );
        let long = "a-very-long-node-name-that-goes-on-and-on-and-on-for-ever";
        let n = job_name(long, "statistics", date(2026, 11, 30));
        assert!(
            n.len() <= 63 && n.ends_with("-statistics-20261130") && n.starts_with("a-very-long"),
            "{n}"
        );
        assert_ne!(
            n,
            job_name(
                "a-very-long-node-name-that-goes-on-and-on-and-on-for-evermore",
                "statistics",
                date(2026, 11, 30)
            )
        );
    }

    #[test]
    fn the_service_and_its_batch_jobs_run_where_the_template_says_as_the_restricted_standard_asks()
    {
        let mut node = cs();
        node.spec.template = serde_json::from_value(json!({
            "nodeSelector": {"jukinet.io/real-node": "true"},
            "tolerations": [{"key": "jukinet.io/real-node", "operator": "Exists", "effect": "NoSchedule"}],
        }))
        .unwrap();
        let ctx = Context {
            calendar_json: &json!({}),
            extensions_json: &json!([]),
            upstream_url: None,
            node_clock: None,
            delivery_keys: None,
            otlp_endpoint: None,
            sqlite_volume: SqliteVolume::Pvc,
        };
        let service = deployment(&node, &ctx, 1)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let batch = batch_job(&node, &ctx, "backup", date(2026, 11, 30))
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        for pod in [service, batch] {
            assert_eq!(
                pod.node_selector,
                Some(BTreeMap::from([(
                    "jukinet.io/real-node".to_string(),
                    "true".to_string()
                )]))
            );
            assert_eq!(
                pod.tolerations.unwrap()[0].key.as_deref(),
                Some("jukinet.io/real-node")
            );
            let security = pod.security_context.unwrap();
            assert_eq!(
                (
                    security.run_as_non_root,
                    security.run_as_user,
                    security.fs_group
                ),
                (Some(true), Some(65532), Some(65532))
            );
            assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
            let container = pod.containers[0].security_context.clone().unwrap();
            assert_eq!(container.allow_privilege_escalation, Some(false));
            assert_eq!(
                container.capabilities.unwrap().drop,
                Some(vec!["ALL".to_string()])
            );
        }
    }

    #[test]
    fn owned_objects_point_back_to_the_node() {
        let node = cs();
        let ctx = Context {
            calendar_json: &json!({}),
            extensions_json: &json!([]),
            upstream_url: Some("http://pref-13.juki-pref-13.svc:8080".into()),
            sqlite_volume: SqliteVolume::EmptyDir,
            node_clock: None,
            delivery_keys: None,
            otlp_endpoint: None,
        };
        let d = deployment(&node, &ctx, 2);
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("JukiNode", "cs-131016", Some(true))
        );
        let cm = config_map(&node, &ctx);
        let node_json = &cm.data.as_ref().unwrap()["node.json"];
        assert!(
            node_json.contains("\"prefecture\": \"13\"")
                && node_json.contains("pref-13.juki-pref-13.svc")
                && !node_json.contains("clock"),
            "{node_json}"
        );
        // On a fast clock the node is given the operator's clock.
        let fast = Context {
            node_clock: Some("fast:2026-11-25T01:00:00Z@2026-12-06T05:00:00Z,x300".into()),
            delivery_keys: Some("ab".repeat(32)),
            otlp_endpoint: None,
            ..ctx.clone()
        };
        let node_json: serde_json::Value =
            serde_json::from_str(&config_map(&node, &fast).data.unwrap()["node.json"]).unwrap();
        assert_eq!(
            node_json["clock"],
            "fast:2026-11-25T01:00:00Z@2026-12-06T05:00:00Z,x300"
        );
        // The keys a delivery must be signed by, when the operator is given some.
        assert_eq!(node_json["deliveryKeys"], "ab".repeat(32));
        let job = batch_job(&node, &ctx, "backup", date(2026, 11, 30));
        assert_eq!(
            job.metadata.labels.as_ref().unwrap()[NODE_LABEL],
            "cs-131016"
        );
        let template = job.spec.unwrap().template;
        let args = template.spec.unwrap().containers[0].args.clone().unwrap();
        assert_eq!(args, ["batch", "backup", "--date", "2026-11-30"]);
        // A batch pod is not one of the node's serving pods: neither its Service nor its
        // Deployment selects it.
        let pod_labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels[BATCH_OF_LABEL], "cs-131016");
        let selects = |selector: &BTreeMap<String, String>| {
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
        };
        assert!(!selects(
            service(&node).spec.unwrap().selector.as_ref().unwrap()
        ));
        let deployment_selector = d.spec.as_ref().unwrap().selector.match_labels.clone();
        assert!(!selects(&deployment_selector.unwrap()));
    }

    #[test]
    fn the_pods_and_jobs_export_spans_only_to_the_operators_collector() {
        let node = cs();
        let quiet = Context {
            calendar_json: &json!({}),
            extensions_json: &json!([]),
            upstream_url: None,
            sqlite_volume: SqliteVolume::EmptyDir,
            node_clock: None,
            delivery_keys: None,
            otlp_endpoint: None,
        };
        let traced = Context {
            otlp_endpoint: Some("http://collector.monitoring:4318".into()),
            ..quiet.clone()
        };
        let endpoint_of = |ctx: &Context<'_>| -> [Option<String>; 2] {
            let service = deployment(&node, ctx, 1)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap();
            let batch = batch_job(&node, ctx, "backup", date(2026, 11, 30))
                .spec
                .unwrap()
                .template
                .spec
                .unwrap();
            [service, batch].map(|pod| {
                pod.containers[0]
                    .env
                    .iter()
                    .flatten()
                    .find(|e| e.name == OTLP_ENDPOINT_ENV)
                    .and_then(|e| e.value.clone())
            })
        };
        assert_eq!(endpoint_of(&quiet), [None, None]);
        let url = Some("http://collector.monitoring:4318".to_string());
        assert_eq!(endpoint_of(&traced), [url.clone(), url]);
    }

    #[test]
    fn a_tls_node_mounts_its_secret_serves_https_and_is_reached_over_https() {
        let mut node = cs();
        let plain = Context {
            calendar_json: &json!({}),
            extensions_json: &json!([]),
            upstream_url: None,
            node_clock: None,
            delivery_keys: None,
            otlp_endpoint: None,
            sqlite_volume: SqliteVolume::EmptyDir,
        };
        let container =
            |d: &Deployment| d.spec.clone().unwrap().template.spec.unwrap().containers[0].clone();
        let without = container(&deployment(&node, &plain, 1));
        let env = without.env.unwrap();
        assert!(env.iter().all(|e| !e.name.starts_with("JUKI_TLS")));
        let insecure = env.iter().find(|e| e.name == INSECURE_PLAIN_HTTP_ENV);
        assert_eq!(insecure.and_then(|e| e.value.as_deref()), Some("true"));
        assert_eq!(
            without.readiness_probe.unwrap().http_get.unwrap().scheme,
            None
        );

        node.spec.tls = Some(crate::api::NodeTls {
            secret_name: "cs-131016-tls".into(),
        });
        let d = deployment(&node, &plain, 1);
        let c = container(&d);
        let env = c.env.unwrap();
        assert!(env.iter().all(|e| e.name != INSECURE_PLAIN_HTTP_ENV));
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|e| e.name.starts_with("JUKI_TLS"))
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            env,
            [
                ("JUKI_TLS_CERT".into(), "/etc/juki-tls/tls.crt".into()),
                ("JUKI_TLS_KEY".into(), "/etc/juki-tls/tls.key".into()),
                ("JUKI_TLS_CA".into(), "/etc/juki-tls/ca.crt".into()),
            ]
        );
        for probe in [c.readiness_probe.unwrap(), c.liveness_probe.unwrap()] {
            assert_eq!(probe.http_get.unwrap().scheme.as_deref(), Some("HTTPS"));
        }
        let volumes = d.spec.unwrap().template.spec.unwrap().volumes.unwrap();
        let secret = volumes.iter().find_map(|v| v.secret.clone()).unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("cs-131016-tls"));
        assert!(
            c.volume_mounts
                .unwrap()
                .iter()
                .any(|m| m.mount_path == TLS_DIR)
        );
        // The batch Jobs serve nothing: no certificate there.
        let job = batch_job(&node, &plain, "backup", date(2026, 11, 30));
        let job_spec = job.spec.unwrap().template.spec.unwrap();
        assert!(job_spec.volumes.unwrap().iter().all(|v| v.secret.is_none()));

        assert_eq!(
            service_url("pref-13", "juki-pref-13", true),
            "https://pref-13.juki-pref-13.svc:8080"
        );
        assert_eq!(
            service_url("pref-13", "juki-pref-13", false),
            "http://pref-13.juki-pref-13.svc:8080"
        );
    }
}

//! The connection to the local control plane and the per-test helpers.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Scope, pinned_kind};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, Config, Resource};
use serde_json::Value;

/// The message printed (or panicked with) when no control plane answers.
pub const NO_CLUSTER: &str = "no control plane running (start one with `bash tests/cluster/up.sh`)";

/// Field manager of everything the tests apply.
pub const FIELD_MANAGER: &str = "juki-tests";

/// The workspace root (`crds/` and `examples/` live there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A reachable control plane: a kube client plus the kubectl/helm binaries that go with it.
#[derive(Clone)]
pub struct TestCluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    bin_dir: Option<PathBuf>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// Finds the control plane through `KUBECONFIG` (else the state dir of `up.sh`) and checks
    /// that the API answers. `None` when there is no kubeconfig or nothing answers within 5 s.
    pub async fn connect() -> Option<TestCluster> {
        let kubeconfig = kubeconfig_path()?;
        let kc = Kubeconfig::read_from(&kubeconfig).ok()?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .ok()?;
        let client = Client::try_from(config).ok()?;
        // A dead apiserver gives "connection refused" at once; the timeout guards against a hung one.
        tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
            .await
            .ok()?
            .ok()?;
        let bin_dir = cache_bin().filter(|b| b.join("kubectl").is_file());
        Some(TestCluster {
            client,
            kubeconfig,
            bin_dir,
        })
    }

    /// [`connect`](Self::connect), reporting an absent cluster: a visible skip message, or a
    /// panic when `JUKINET_REQUIRE_CLUSTER=1` (so CI cannot pass by skipping everything).
    pub async fn require() -> Option<TestCluster> {
        if let Some(c) = TestCluster::connect().await {
            return Some(c);
        }
        if std::env::var("JUKINET_REQUIRE_CLUSTER").is_ok_and(|v| v == "1") {
            panic!("{NO_CLUSTER}; JUKINET_REQUIRE_CLUSTER=1, so this fails instead of skipping");
        }
        // Written to the real stderr: libtest captures eprintln! of passing tests.
        let _ = writeln!(std::io::stderr(), "{}: skipped: {NO_CLUSTER}", test_name());
        None
    }

    /// A fresh namespace named after the current test, deleted when the guard drops.
    pub async fn namespace(&self) -> Guard {
        let name = unique_name(&format!("jt-{}", test_name()));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"jukinet.io/test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        self.guard("namespace", &name, None)
    }

    /// A guard that deletes `kind/name` (in `namespace`, if given) when dropped.
    pub fn guard(&self, kind: &str, name: &str, namespace: Option<&str>) -> Guard {
        Guard {
            kubectl: self.tool("kubectl"),
            kubeconfig: self.kubeconfig.clone(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
        }
    }

    /// The path of `kubectl`/`helm`: the cluster's own build if present, else from PATH.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir
            .as_ref()
            .map(|b| b.join(name))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| name.into())
    }

    /// Runs a tool with this cluster's kubeconfig and `stdin`; returns (success, stdout, stderr).
    pub async fn run(
        &self,
        tool: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (bool, String, String) {
        use tokio::io::AsyncWriteExt as _;
        let mut child = tokio::process::Command::new(self.tool(tool))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .await
            .unwrap();
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        (out.status.success(), text(out.stdout), text(out.stderr))
    }

    /// `kubectl ARGS`, panicking with its stderr if it fails; returns stdout.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run("kubectl", args, None).await;
        assert!(ok, "kubectl {} failed: {err}", args.join(" "));
        out
    }

    /// Server-side applies one object (a JSON manifest). The namespace, if given, replaces the
    /// manifest's own for namespaced kinds. Errors are the API server's (e.g. validation).
    pub async fn apply(
        &self,
        manifest: &Value,
        namespace: Option<&str>,
    ) -> kube::Result<DynamicObject> {
        // A malformed manifest is a bug in the test, not an API error: panic.
        let mut obj: DynamicObject =
            serde_json::from_value(manifest.clone()).expect("a Kubernetes object");
        let gvk = GroupVersionKind::try_from(&obj.types.clone().unwrap_or_default())
            .expect("apiVersion and kind");
        // Looked up per call, so kinds of CRDs installed a moment ago are found too.
        let (ar, caps) = pinned_kind(&self.client, &gvk).await?;
        let api = if caps.scope == Scope::Namespaced {
            let ns = namespace
                .map(str::to_owned)
                .or(obj.metadata.namespace.clone())
                .unwrap_or("default".into());
            obj.metadata.namespace = Some(ns.clone());
            Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &ar)
        } else {
            Api::<DynamicObject>::all_with(self.client.clone(), &ar)
        };
        let name = obj.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
    }

    /// Applies every document of a (multi-document) YAML string, stopping at the first error.
    pub async fn apply_yaml(
        &self,
        yaml: &str,
        namespace: Option<&str>,
    ) -> anyhow::Result<Vec<DynamicObject>> {
        let mut applied = vec![];
        for doc in parse_yaml(yaml)? {
            let name = doc["metadata"]["name"].as_str().unwrap_or("?").to_owned();
            applied.push(
                self.apply(&doc, namespace)
                    .await
                    .with_context(|| format!("applying {name}"))?,
            );
        }
        Ok(applied)
    }

    /// Applies every CRD of `crds/` (or `$JUKINET_CRDS_DIR`, to try CRDs before writing them
    /// there) and waits until each is Established. Idempotent; never deleted, as parallel tests
    /// share them.
    pub async fn install_crds(&self) {
        let dir = std::env::var_os("JUKINET_CRDS_DIR")
            .map_or_else(|| repo_root().join("crds"), PathBuf::from);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let api = Api::<CustomResourceDefinition>::all(self.client.clone());
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        {
            let yaml = std::fs::read_to_string(file).unwrap();
            for crd in self
                .apply_yaml(&yaml, None)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:#}", file.display()))
            {
                let name = crd.metadata.name.unwrap();
                wait_for(
                    &api,
                    &name,
                    conditions::is_crd_established(),
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
            }
        }
    }
}

/// Waits up to `timeout` until `cond` holds for `name`; returns the object that satisfied it.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    cond: impl Condition<K>,
    timeout: Duration,
) -> anyhow::Result<K>
where
    K: Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + Resource + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => bail!("{name} was deleted while waiting"),
        Ok(Err(e)) => bail!("watching {name}: {e}"),
        Err(_) => bail!(
            "{name}: condition not met within {timeout:?} (last state: {:?})",
            api.get_opt(name).await
        ),
    }
}

/// Polls `check` every 250 ms until it returns true; fails after `timeout`.
pub async fn poll_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not reached within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// The documents of a multi-document YAML string as JSON values (empty documents dropped).
pub fn parse_yaml(yaml: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize as _;
    let mut docs = vec![];
    for de in serde_yaml::Deserializer::from_str(yaml) {
        let doc = Value::deserialize(de)?;
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// A file under the workspace root, read as a string.
pub fn read_repo_file(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `prefix-<6 hex>`, a valid DNS-1123 label unique per call.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let mut p: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(48)
        .collect();
    while p.ends_with('-') {
        p.pop();
    }
    format!("{p}-{:06x}", h.finish() & 0xff_ffff)
}

/// Deletes a Kubernetes object when dropped. A blocking `kubectl delete --wait=false` rather than
/// an async call, because it must also run while a failed test unwinds (its runtime may be gone).
#[derive(Debug)]
pub struct Guard {
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    kind: String,
    pub name: String,
    namespace: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut cmd = Command::new(&self.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig).args([
            "delete",
            &self.kind,
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
        if let Some(ns) = &self.namespace {
            cmd.args(["-n", ns]);
        }
        match cmd.stdout(Stdio::null()).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "cleanup of {} {} failed: {}",
                self.kind,
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cleanup of {} {} failed: {e}", self.kind, self.name),
        }
    }
}

impl std::ops::Deref for Guard {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

/// libtest names each test's thread after the test (`module::test_name`); keep the last part.
pub fn test_name() -> String {
    let thread = std::thread::current();
    thread
        .name()
        .unwrap_or("test")
        .rsplit("::")
        .next()
        .unwrap_or("test")
        .to_owned()
}

/// The bin directory of the cache `tests/cluster/build.sh` builds into.
fn cache_bin() -> Option<PathBuf> {
    std::env::var_os("JUKINET_CLUSTER_CACHE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".cache/jukinet/cluster")))
        .map(|c| c.join("bin"))
}

/// A binary `tests/cluster/build.sh` built (helm, promtool, amtool, …), for the tests that need
/// the tool but no cluster. Missing: a visible skip message and `None`, or a panic when
/// `JUKINET_REQUIRE_CLUSTER=1` (scripts/test runs build.sh first, so there it is a real failure).
pub fn require_built(name: &str) -> Option<PathBuf> {
    if let Some(path) = cache_bin().map(|b| b.join(name)).filter(|p| p.is_file()) {
        return Some(path);
    }
    let missing = format!("{name} is not built (run `bash tests/cluster/build.sh`)");
    if std::env::var("JUKINET_REQUIRE_CLUSTER").is_ok_and(|v| v == "1") {
        panic!("{missing}; JUKINET_REQUIRE_CLUSTER=1, so this fails instead of skipping");
    }
    let _ = writeln!(std::io::stderr(), "{}: skipped: {missing}", test_name());
    None
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn kubeconfig_path() -> Option<PathBuf> {
    // KUBECONFIG may be a list; the first existing file is the one up.sh wrote.
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&list).find(|p| p.is_file());
    }
    let state = std::env::var_os("JUKINET_CLUSTER_STATE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".cache/jukinet/cluster-state")))?;
    Some(state.join("admin.kubeconfig")).filter(|p| p.is_file())
}

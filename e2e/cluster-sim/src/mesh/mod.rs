//! The simulated cluster behind the API server: cert-manager, the Deployment, ReplicaSet,
//! StatefulSet, DaemonSet, Job, CronJob and disruption controllers with a scheduler and a
//! kubelet, the Linkerd control plane (proxy injector, identity
//! controller), one proxy per meshed pod serving its admin port on the pod's loopback IP,
//! and an mTLS oracle that says at every instant whether meshed pods can still talk.
//!
//! Everything here talks to the [`Store`] only (never HTTP); the proxies' admin servers are
//! the only sockets. See `MESH.md` beside the crate for what is simplified.

pub mod availability;
pub mod batch;
pub mod certmanager;
pub mod cron;
pub mod disruption;
pub mod kubelet;
pub mod linkerd;
pub mod listeners;
pub mod oracle;
pub mod pki;
pub mod proxy;
pub mod sets;
pub mod topology;
pub mod types;
pub mod workloads;

use crate::store::{ResourceKey, Store, StoreError};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use oracle::{LowInterval, Oracle, OracleReport, OracleSnapshot};
pub use topology::Topology;

/// Linkerd's control-plane namespace in the simulation.
pub const LINKERD_NS: &str = "linkerd";
/// cert-manager's namespace (also its cluster resource namespace for ClusterIssuers).
pub const CERT_MANAGER_NS: &str = "cert-manager";
/// Linkerd's trust domain.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// The trust-roots ConfigMap and its key.
pub const TRUST_ROOTS_CM: &str = "linkerd-identity-trust-roots";
pub const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";
/// The identity issuer Secret.
pub const ISSUER_SECRET: &str = "linkerd-identity-issuer";
/// The proxy container, its admin port and env names.
pub const PROXY_CONTAINER: &str = "linkerd-proxy";
pub const PROXY_ADMIN_PORT: u16 = 4191;
pub const ENV_TRUST_ANCHORS: &str = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS";
pub const ENV_MIN_REFRESH: &str = "LINKERD2_PROXY_IDENTITY_MIN_REFRESH";
pub const ENV_MAX_REFRESH: &str = "LINKERD2_PROXY_IDENTITY_MAX_REFRESH";
pub const ENV_LOCAL_NAME: &str = "LINKERD2_PROXY_IDENTITY_LOCAL_NAME";
/// Labels and annotations.
pub const LABEL_CONTROL_PLANE_NS: &str = "linkerd.io/control-plane-ns";
pub const LABEL_WORKLOAD_NS: &str = "linkerd.io/workload-ns";
pub const LABEL_COMPONENT: &str = "linkerd.io/control-plane-component";
pub const LABEL_IS_CONTROL_PLANE: &str = "linkerd.io/is-control-plane";
pub const ANNOTATION_INJECT: &str = "linkerd.io/inject";
pub const ANNOTATION_TRUST_ROOT_SHA256: &str = "linkerd.io/trust-root-sha256";
pub const ANNOTATION_ADDITIONAL_ENV: &str = "config.linkerd.io/proxy-additional-env";
/// Linkerd's per-pod (or namespace) admin port override.
pub const ANNOTATION_ADMIN_PORT: &str = "config.linkerd.io/admin-port";
/// Linkerd's native-sidecar switch (the `beta` and `alpha` spellings are accepted too).
pub const ANNOTATION_NATIVE_SIDECAR: &str = "config.linkerd.io/proxy-enable-native-sidecar";
/// The simulator's own pod annotations (reserved `.test` domain: no real cluster uses them).
/// The app containers ignore SIGTERM and run until the grace period ends.
pub const ANNOTATION_SIM_IGNORE_SIGTERM: &str = "cluster-sim.test/ignore-sigterm";
/// `"true"`: the pod's application containers exit with code 1 as soon as they start and
/// are restarted with back-off (`CrashLoopBackOff`), never Ready: a broken image, for
/// rollouts that never complete. Set it on a pod template.
pub const ANNOTATION_SIM_CRASH_LOOP: &str = "cluster-sim.test/crash-loop";
/// The node evicts the pod (node-pressure eviction); the value is the message.
pub const ANNOTATION_SIM_EVICT: &str = "cluster-sim.test/evict";

/// How long things take in the simulated cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Durations {
    /// From pod creation to its containers running.
    pub pod_start: Duration,
    /// How long a ConfigMap/Secret change takes to reach a mounted volume (the injector's
    /// view of the trust bundle, identity's view of the issuer Secret).
    pub volume_propagation: Duration,
    /// Lifetime of the workload certificates identity issues (`issuanceLifetime`).
    pub workload_cert_lifetime: Duration,
    /// Clock-skew allowance identity subtracts from `notBefore`.
    pub workload_cert_skew: Duration,
    /// The proxy's defaults when `LINKERD2_PROXY_IDENTITY_{MIN,MAX}_REFRESH` are unset.
    pub proxy_min_refresh: Duration,
    pub proxy_max_refresh: Duration,
    /// Back-off between restarts of a crashing container (doubles, capped at 8x).
    pub crash_backoff: Duration,
    /// How often the mTLS oracle samples.
    pub oracle_interval: Duration,
    /// How long one minute of CronJob schedule time lasts on the wall clock (schedules
    /// are evaluated on a clock that runs `60s / cron_minute` times faster).
    pub cron_minute: Duration,
    /// A network round trip added before a proxy's admin port answers a new connection (0
    /// unless asked for): the simulator's pods are on loopback, so a probe sweep measured
    /// against it would otherwise show no network at all.
    pub proxy_admin_latency: Duration,
}

impl Durations {
    /// Linkerd's and Kubernetes' real defaults: 24h workload certificates, refresh between
    /// 10s and 24h, a minute for volumes to update.
    pub fn real() -> Self {
        Self {
            pod_start: Duration::from_secs(2),
            volume_propagation: Duration::from_secs(60),
            workload_cert_lifetime: Duration::from_secs(24 * 3600),
            workload_cert_skew: Duration::from_secs(20),
            proxy_min_refresh: Duration::from_secs(10),
            proxy_max_refresh: Duration::from_secs(24 * 3600),
            crash_backoff: Duration::from_secs(10),
            oracle_interval: Duration::from_millis(500),
            cron_minute: Duration::from_secs(60),
            proxy_admin_latency: Duration::ZERO,
        }
    }

    /// Seconds instead of hours, so a whole rotation fits in well under two minutes.
    pub fn demo() -> Self {
        Self {
            pod_start: Duration::from_millis(500),
            volume_propagation: Duration::from_secs(1),
            workload_cert_lifetime: Duration::from_secs(30),
            workload_cert_skew: Duration::from_secs(20),
            proxy_min_refresh: Duration::from_millis(500),
            proxy_max_refresh: Duration::from_secs(24 * 3600),
            crash_backoff: Duration::from_millis(500),
            oracle_interval: Duration::from_millis(100),
            cron_minute: Duration::from_secs(5),
            proxy_admin_latency: Duration::ZERO,
        }
    }

    /// Even shorter, for tests.
    pub fn fast() -> Self {
        Self {
            pod_start: Duration::from_millis(100),
            volume_propagation: Duration::from_millis(300),
            workload_cert_lifetime: Duration::from_secs(6),
            workload_cert_skew: Duration::from_secs(20),
            proxy_min_refresh: Duration::from_millis(200),
            proxy_max_refresh: Duration::from_secs(24 * 3600),
            crash_backoff: Duration::from_millis(200),
            oracle_interval: Duration::from_millis(50),
            cron_minute: Duration::from_secs(1),
            proxy_admin_latency: Duration::ZERO,
        }
    }
}

impl Default for Durations {
    fn default() -> Self {
        Self::demo()
    }
}

/// What [`install`] sets up.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub topology: Topology,
    /// Extra meshed pods (`--pods N`) on top of the topology.
    pub pods: usize,
    pub durations: Durations,
    pub seed: u64,
    /// Where proxies' admin-port listeners may live.
    pub listeners: listeners::ListenerConfig,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            topology: Topology::Empty,
            pods: 0,
            durations: Durations::default(),
            seed: 0,
            listeners: Default::default(),
        }
    }
}

/// State shared by every component.
pub(crate) struct Shared {
    pub store: Store,
    pub durations: Durations,
    pub proxies: proxy::Registry,
    pub identity: linkerd::IdentityService,
    pub ips: kubelet::IpAllocator,
    pub admin_ports: listeners::AdminPorts,
    pub bundle_view: linkerd::BundleView,
    pub cancel: CancellationToken,
    pub topology: Arc<topology::Progress>,
    /// CronJob schedule time.
    pub clock: cron::SimClock,
    /// The scheduler's round-robin position over fitting Nodes.
    pub next_node: std::sync::atomic::AtomicUsize,
    /// The most pods each workload had unavailable (an observation for tests).
    pub max_unavailable: availability::MaxUnavailable,
}

/// The running mesh. Dropping it does not stop it; call [`MeshHandle::shutdown`].
#[derive(Clone)]
pub struct MeshHandle {
    shared: Arc<Shared>,
    oracle: Oracle,
}

/// Registers what the mesh needs, starts every controller and creates the topology's
/// objects. Must run inside a Tokio runtime. Returns at once; [`MeshHandle::converged`]
/// waits for the topology to be Ready.
pub fn install(store: &Store, cfg: &MeshConfig) -> anyhow::Result<MeshHandle> {
    let admin_ports = listeners::AdminPorts::new(&cfg.listeners, cfg.pods)?;
    types::register_missing(store);
    let cancel = CancellationToken::new();
    let shared = Arc::new(Shared {
        store: store.clone(),
        durations: cfg.durations.clone(),
        proxies: proxy::Registry::default(),
        identity: linkerd::IdentityService::default(),
        ips: kubelet::IpAllocator::new(cfg.seed),
        admin_ports,
        bundle_view: linkerd::BundleView::default(),
        cancel: cancel.clone(),
        topology: topology::progress(),
        clock: cron::SimClock::new(cfg.durations.cron_minute),
        next_node: Default::default(),
        max_unavailable: Default::default(),
    });
    store.add_admission_hook(Arc::new(linkerd::Injector::new(shared.clone())));
    tokio::spawn(certmanager::run(shared.clone()));
    tokio::spawn(workloads::run(shared.clone()));
    tokio::spawn(sets::run(shared.clone()));
    tokio::spawn(batch::run(shared.clone()));
    tokio::spawn(disruption::run(shared.clone()));
    tokio::spawn(availability::run(shared.clone()));
    tokio::spawn(kubelet::run(shared.clone()));
    tokio::spawn(linkerd::run_bundle_view(shared.clone()));
    tokio::spawn(linkerd::run_issuer_watch(shared.clone()));
    let oracle = Oracle::start(shared.clone());
    topology::create(&shared, cfg)?;
    Ok(MeshHandle { shared, oracle })
}

impl MeshHandle {
    /// The mTLS oracle.
    pub fn oracle(&self) -> &Oracle {
        &self.oracle
    }

    /// The store the mesh runs on.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Waits until every Certificate is Ready, every Deployment has rolled out and every
    /// meshed pod's proxy holds a certificate. Errors with what is still pending.
    pub async fn converged(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending = topology::pending(&self.shared);
            if pending.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the simulated cluster did not converge within {timeout:?}; still pending: {}\n{}",
                    pending.join("; "),
                    topology::stuck_details(&self.shared)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prometheus text lines for the simulator's `/metrics` (A appends them).
    pub fn metrics_text(&self) -> String {
        self.oracle.metrics_text() + &self.shared.max_unavailable.metrics_text()
    }

    /// The most pods each workload (`ns/kind/name`) had unavailable since the last reset:
    /// desired replicas (a DaemonSet's desired scheduled pods) minus its Ready pods that are
    /// not terminating.
    pub fn max_unavailable(&self) -> std::collections::BTreeMap<String, i64> {
        self.shared.max_unavailable.snapshot()
    }

    /// Starts recording [`MeshHandle::max_unavailable`] afresh.
    pub fn reset_max_unavailable(&self) {
        self.shared.max_unavailable.reset()
    }

    /// Listener helper processes started so far (see [`listeners`]).
    pub async fn listener_helpers(&self) -> usize {
        self.shared.admin_ports.helpers().await
    }

    /// Stops every controller, proxy and admin server.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        self.shared.proxies.stop_all();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === small helpers shared by the components ===

pub(crate) fn key(group: &str, plural: &str) -> ResourceKey {
    ResourceKey::new(group, plural)
}
pub(crate) fn pods() -> ResourceKey {
    key("", "pods")
}
pub(crate) fn namespaces() -> ResourceKey {
    key("", "namespaces")
}
pub(crate) fn configmaps() -> ResourceKey {
    key("", "configmaps")
}
pub(crate) fn secrets() -> ResourceKey {
    key("", "secrets")
}
pub(crate) fn events() -> ResourceKey {
    key("", "events")
}
pub(crate) fn deployments() -> ResourceKey {
    key("apps", "deployments")
}
pub(crate) fn replicasets() -> ResourceKey {
    key("apps", "replicasets")
}
pub(crate) fn statefulsets() -> ResourceKey {
    key("apps", "statefulsets")
}
pub(crate) fn daemonsets() -> ResourceKey {
    key("apps", "daemonsets")
}
pub(crate) fn controller_revisions() -> ResourceKey {
    key("apps", "controllerrevisions")
}
pub(crate) fn jobs() -> ResourceKey {
    key("batch", "jobs")
}
pub(crate) fn cronjobs() -> ResourceKey {
    key("batch", "cronjobs")
}
pub(crate) fn pdbs() -> ResourceKey {
    key("policy", "poddisruptionbudgets")
}
pub(crate) fn nodes() -> ResourceKey {
    key("", "nodes")
}
pub(crate) fn certificates() -> ResourceKey {
    key("cert-manager.io", "certificates")
}
pub(crate) fn issuers() -> ResourceKey {
    key("cert-manager.io", "issuers")
}
pub(crate) fn cluster_issuers() -> ResourceKey {
    key("cert-manager.io", "clusterissuers")
}

pub(crate) fn now_rfc3339() -> String {
    ts_rfc3339(jiff::Timestamp::now())
}

pub(crate) fn ts_rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(crate) fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

pub(crate) fn ns_of(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}

/// Parses an RFC 3339 timestamp as the API writes them.
pub(crate) fn parse_ts(v: &Value) -> Option<jiff::Timestamp> {
    v.as_str()?.parse().ok()
}

/// Reads a key of a Secret's `data` (base64) or, failing that, `stringData`.
pub(crate) fn secret_value(secret: &Value, k: &str) -> Option<String> {
    use base64::Engine;
    if let Some(b64) = secret["data"][k].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    secret["stringData"][k].as_str().map(str::to_string)
}

pub(crate) fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// Sets condition `type` in `status.conditions`, keeping `lastTransitionTime` when the
/// status did not change.
pub(crate) fn set_condition(
    obj: &mut Value,
    ctype: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    let now = now_rfc3339();
    let Some(conds) = obj["status"]["conditions"].as_array_mut() else {
        return;
    };
    let mut cond = json!({"type": ctype, "status": status, "reason": reason, "message": message, "lastTransitionTime": now});
    if let Some(g) = generation {
        cond["observedGeneration"] = json!(g);
    }
    if let Some(existing) = conds.iter_mut().find(|c| c["type"] == ctype) {
        if existing["status"] == status {
            cond["lastTransitionTime"] = existing["lastTransitionTime"].clone();
        }
        *existing = cond;
    } else {
        conds.push(cond);
    }
}

pub(crate) fn remove_condition(obj: &mut Value, ctype: &str) {
    if let Some(conds) = obj["status"]["conditions"].as_array_mut() {
        conds.retain(|c| c["type"] != ctype);
    }
}

pub(crate) fn condition<'a>(obj: &'a Value, ctype: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ctype)
}

pub(crate) fn condition_true(obj: &Value, ctype: &str) -> bool {
    condition(obj, ctype).is_some_and(|c| c["status"] == "True")
}

/// Records a core/v1 Event about `involved` (kind, namespace, name, uid, apiVersion).
pub(crate) fn record_event(
    store: &Store,
    involved: &Value,
    event_type: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = ns_of(involved).to_string();
    let now = now_rfc3339();
    let ev = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{}.", name_of(involved)), "namespace": ns},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "namespace": ns,
            "name": name_of(involved),
            "uid": involved["metadata"]["uid"],
            "resourceVersion": involved["metadata"]["resourceVersion"],
        },
        "reason": reason,
        "message": message,
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": null,
        "count": 1,
    });
    if let Err(e) = store.create(&events(), ev) {
        tracing::warn!(error = %e, reason, "could not record event");
    }
}

/// `mutate` that treats "gone" as success (the object was deleted meanwhile).
pub(crate) fn mutate_if_exists<F>(
    store: &Store,
    k: &ResourceKey,
    ns: Option<&str>,
    name: &str,
    f: F,
) -> Result<Option<Arc<Value>>, StoreError>
where
    F: FnOnce(&mut Value) -> Result<(), StoreError>,
{
    match store.mutate(k, ns, name, f) {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits for the next store event that passes `relevant`, or until `deadline`; drains
/// whatever else is queued. Returns false when cancelled. A lagging receiver counts as an
/// event (the caller resyncs everything anyway).
pub(crate) async fn wait_for_change(
    rx: &mut tokio::sync::broadcast::Receiver<crate::store::WatchEvent>,
    cancel: &CancellationToken,
    deadline: Option<tokio::time::Instant>,
    relevant: &(dyn Fn(&crate::store::WatchEvent) -> bool + Sync),
) -> bool {
    use tokio::sync::broadcast::error::RecvError;
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    let sleep = tokio::time::sleep_until(deadline.unwrap_or(far));
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = &mut sleep => return true,
            ev = rx.recv() => match ev {
                Ok(ev) if relevant(&ev) => break,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return false,
            }
        }
    }
    // Debounce: collect a burst of changes into one pass.
    tokio::time::sleep(Duration::from_millis(5)).await;
    while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) = rx.try_recv() {}
    true
}

/// When a controller's full pass (the safety net behind its event-driven passes) is next
/// due: every `base`, or 20 times as long as the last full pass took when that is longer, so
/// that on a large mesh (a pass over 50,000 pods) the safety net takes at most a twentieth of
/// the simulator's core instead of crowding out the work the events ask for.
pub(crate) struct SafetyNet {
    base: Duration,
    last: tokio::time::Instant,
    period: Duration,
}

impl SafetyNet {
    /// The first full pass is due at once.
    pub(crate) fn new(base: Duration) -> Self {
        Self {
            base,
            last: tokio::time::Instant::now(),
            period: Duration::ZERO,
        }
    }

    pub(crate) fn due(&self) -> bool {
        self.last.elapsed() >= self.period
    }

    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        self.last + self.period
    }

    /// Runs a full pass and schedules the next.
    pub(crate) fn run<T>(&mut self, pass: impl FnOnce() -> T) -> T {
        let started = tokio::time::Instant::now();
        let out = pass();
        self.last = started;
        self.period = self.base.max(started.elapsed() * 20);
        out
    }

    /// Makes the next full pass due at once (after an error).
    pub(crate) fn now(&mut self) {
        self.period = Duration::ZERO;
    }
}

/// What a controller has to look at after [`wait_for_changes`].
pub(crate) enum Changes {
    /// Everything: the first pass, or a receiver that lagged and lost events.
    All,
    /// The deadline passed with no relevant event (a timer, or the periodic full pass).
    Due,
    /// Only what these events name (relevant ones, in order).
    Events(Vec<crate::store::WatchEvent>),
}

/// [`wait_for_change`] for controllers that reconcile only what changed: returns the
/// relevant events that arrived (a burst within the 5 ms debounce is one batch),
/// [`Changes::Due`] at `deadline`, or [`Changes::All`] when the receiver lagged. None when
/// cancelled.
pub(crate) async fn wait_for_changes(
    rx: &mut tokio::sync::broadcast::Receiver<crate::store::WatchEvent>,
    cancel: &CancellationToken,
    deadline: tokio::time::Instant,
    relevant: &(dyn Fn(&crate::store::WatchEvent) -> bool + Sync),
) -> Option<Changes> {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    let mut events = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = &mut sleep => return Some(Changes::Due),
            ev = rx.recv() => match ev {
                Ok(ev) if relevant(&ev) => {
                    events.push(ev);
                    break;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return Some(Changes::All),
                Err(RecvError::Closed) => return None,
            }
        }
    }
    // Debounce: collect a burst of changes into one pass.
    tokio::time::sleep(Duration::from_millis(5)).await;
    loop {
        match rx.try_recv() {
            Ok(ev) => {
                if relevant(&ev) {
                    events.push(ev);
                }
            }
            Err(TryRecvError::Lagged(_)) => return Some(Changes::All),
            Err(TryRecvError::Empty) => return Some(Changes::Events(events)),
            Err(TryRecvError::Closed) => return None,
        }
    }
}

/// An object's controller reference (`ownerReferences` entry with `controller: true`).
pub(crate) fn controller_ref(o: &Value) -> Option<&Value> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
}

/// `(namespace, name)` of the controller of kind `kind` that owns `o` (same namespace).
pub(crate) fn controller_of_kind(o: &Value, kind: &str) -> Option<(String, String)> {
    let r = controller_ref(o)?;
    (r["kind"] == kind).then(|| {
        (
            ns_of(o).to_string(),
            r["name"].as_str().unwrap_or("").to_string(),
        )
    })
}

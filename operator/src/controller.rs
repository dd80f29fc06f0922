//! Wiring: the watches (on every replica, so a standby is ready to lead with a warm cache)
//! and the reconcile loop (on the leader) that runs one [`Runner`] for the
//! TrustAnchorRotation named `cluster`.
//!
//! The watches follow the TrustAnchorRotations: a new or edited one wakes the loop at once,
//! and the Secrets, ConfigMap, Deployments, Events and meshed pods it names are watched from
//! then on (by name, so that the chart's least-privilege RBAC, which grants these by
//! `resourceNames`, suffices); objects no rotation names any more stop being watched.

use crate::clients::WATCH_TIMEOUT_SECS;
use crate::health::{Health, Streak};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};
use trust_rotation_crds::{
    TrustAnchorRotation, TrustAnchorRotationSpec, TrustAnchorRotationStatus,
    CONTROL_PLANE_NS_LABEL, DEFAULT_ROTATION_NAME,
};
use trust_rotation_steps::metrics::Metrics;
use trust_rotation_steps::observe::{meshed_pod_from, MeshedPod, PodRef};
use trust_rotation_steps::rotation;
use trust_rotation_steps::runner::transition::{set_condition, EventKind, EventRecord};
use trust_rotation_steps::runner::{
    store, EventSink, KubeEvents, KubeStatusStore, Runner, RunnerConfig, StatusStore, WriteGate,
    CONDITION_BLOCKED, CONDITION_READY,
};
use trust_rotation_steps::snapshot::PodSource;

/// Coalesces bursts of watch events (a rollout touches many pods at once): a look starts no
/// sooner than this after the first event it answers.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How long a reconcile in flight may finish after SIGTERM (while the Lease is still held).
const DRAIN: Duration = Duration::from_secs(10);
/// How soon to look again after a status write lost a race with another writer.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);
/// How long a new leader's first look waits for the meshed-pod watch's first list: until it
/// has synced a step lists every pod itself, and at 50,000 pods the two lists of the whole
/// mesh would overlap (twice the requests, twice the pages held at once).
const POD_SYNC_GRACE: Duration = Duration::from_secs(30);

// === pod cache ===

#[derive(Default)]
struct MeshCache {
    synced: bool,
    failing: Option<Streak>,
    pods: HashMap<String, MeshedPod>,
    /// A relist in progress (watcher `Init` .. `InitDone`).
    staging: Option<HashMap<String, MeshedPod>>,
}

/// Meshed pods by control-plane namespace, fed by watches. Only what a rotation needs of each
/// pod is kept (a [`MeshedPod`]), so memory grows with meshed pods by a small constant.
#[derive(Default)]
pub struct PodCache {
    meshes: RwLock<HashMap<String, MeshCache>>,
}

impl PodSource for PodCache {
    /// `None` (steps then list pods from the API server) until the watch synced, and while
    /// it has been failing for longer than [`crate::health::STALE_AFTER`].
    fn meshed_pods(&self, linkerd_ns: &str) -> Option<Vec<MeshedPod>> {
        let meshes = self.meshes.read().ok()?;
        let mesh = meshes.get(linkerd_ns)?;
        let stale = mesh
            .failing
            .as_ref()
            .is_some_and(|f| f.stale(Instant::now()));
        (mesh.synced && !stale).then(|| mesh.pods.values().cloned().collect())
    }

    /// Drops a pod the API server says is gone. Should the watch still deliver it, it comes
    /// back as the watch says.
    fn forget_pod(&self, linkerd_ns: &str, pod: &PodRef) {
        if let Ok(mut meshes) = self.meshes.write() {
            if let Some(mesh) = meshes.get_mut(linkerd_ns) {
                mesh.pods.remove(&pod.to_string());
            }
        }
    }
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

impl PodCache {
    /// Whether the watch of `linkerd_ns`'s meshed pods is still on its first list: not
    /// synced, and not failing either (then waiting for it is no use).
    pub fn first_list_pending(&self, linkerd_ns: &str) -> bool {
        self.meshes.read().is_ok_and(|m| {
            m.get(linkerd_ns)
                .is_none_or(|mesh| !mesh.synced && mesh.failing.is_none())
        })
    }

    /// Applies one watch event; returns whether the cache just synced.
    fn apply(&self, linkerd_ns: &str, ev: watcher::Event<Pod>) -> bool {
        let Ok(mut meshes) = self.meshes.write() else {
            return false;
        };
        let mesh = meshes.entry(linkerd_ns.to_string()).or_default();
        mesh.failing = None;
        match ev {
            watcher::Event::Init => mesh.staging = Some(HashMap::new()),
            watcher::Event::InitApply(p) => {
                if let (Some(staging), Some(m)) =
                    (mesh.staging.as_mut(), meshed_pod_from(&p, linkerd_ns))
                {
                    staging.insert(pod_key(&p), m);
                }
            }
            watcher::Event::InitDone => {
                mesh.pods = mesh.staging.take().unwrap_or_default();
                let first = !mesh.synced;
                mesh.synced = true;
                return first;
            }
            watcher::Event::Apply(p) => match meshed_pod_from(&p, linkerd_ns) {
                Some(m) => {
                    mesh.pods.insert(pod_key(&p), m);
                }
                None => {
                    mesh.pods.remove(&pod_key(&p));
                }
            },
            watcher::Event::Delete(p) => {
                mesh.pods.remove(&pod_key(&p));
            }
        }
        false
    }

    /// The watch failed at `now`.
    fn failed(&self, linkerd_ns: &str, error: String, now: Instant) {
        if let Ok(mut meshes) = self.meshes.write() {
            let mesh = meshes.entry(linkerd_ns.to_string()).or_default();
            mesh.failing = Some(Streak::record(mesh.failing.as_ref(), error, now));
        }
    }

    /// No rotation names this mesh any more.
    fn forget(&self, linkerd_ns: &str) {
        if let Ok(mut meshes) = self.meshes.write() {
            meshes.remove(linkerd_ns);
        }
    }
}

// === what to watch ===

/// The objects one rotation reads, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WatchTargets {
    /// `(namespace, name)` of Secrets: anchor, issuer, previous anchor.
    pub secrets: BTreeSet<(String, String)>,
    pub configmaps: BTreeSet<(String, String)>,
    pub deployments: BTreeSet<(String, String)>,
    /// Namespaces whose Events matter (the identity controller's).
    pub event_namespaces: BTreeSet<String>,
    /// Control-plane namespaces whose meshed pods are cached.
    pub meshes: BTreeSet<String>,
}

impl WatchTargets {
    /// What `specs` name; the defaults when there is no rotation yet.
    pub fn of(specs: &[TrustAnchorRotationSpec]) -> Self {
        let default = [TrustAnchorRotationSpec::default()];
        let specs = if specs.is_empty() {
            &default[..]
        } else {
            specs
        };
        let mut t = WatchTargets::default();
        for s in specs {
            t.secrets.insert((
                s.trust_anchor.namespace.clone(),
                s.trust_anchor.secret.clone(),
            ));
            t.secrets.insert((
                s.identity_issuer.namespace.clone(),
                s.identity_issuer.secret.clone(),
            ));
            t.secrets.insert((
                s.previous_anchor.namespace.clone(),
                s.previous_anchor.name.clone(),
            ));
            t.configmaps
                .insert((s.trust_roots.namespace.clone(), s.trust_roots.name.clone()));
            for d in s.control_plane.deployments() {
                t.deployments.insert((s.control_plane.namespace.clone(), d));
            }
            t.event_namespaces.insert(s.control_plane.namespace.clone());
            t.meshes.insert(s.control_plane.namespace.clone());
        }
        t
    }

    /// The rotations whose objects are watched: the one named `cluster`, if its spec is
    /// usable (a spec with invalid names is blocked by the runner, not watched).
    pub fn of_rotations<'a>(
        rotations: impl IntoIterator<Item = (&'a str, &'a TrustAnchorRotationSpec)>,
    ) -> Self {
        let specs: Vec<TrustAnchorRotationSpec> = rotations
            .into_iter()
            .filter(|(name, spec)| *name == DEFAULT_ROTATION_NAME && spec.validate().is_ok())
            .map(|(_, spec)| spec.clone())
            .collect();
        Self::of(&specs)
    }

    /// One key per watch.
    pub fn keys(&self) -> BTreeSet<WatchKey> {
        let mut k = BTreeSet::new();
        for (ns, n) in &self.secrets {
            k.insert(WatchKey::Secret(ns.clone(), n.clone()));
        }
        for (ns, n) in &self.configmaps {
            k.insert(WatchKey::ConfigMap(ns.clone(), n.clone()));
        }
        for (ns, n) in &self.deployments {
            k.insert(WatchKey::Deployment(ns.clone(), n.clone()));
        }
        for ns in &self.event_namespaces {
            k.insert(WatchKey::Events(ns.clone()));
        }
        for ns in &self.meshes {
            k.insert(WatchKey::Pods(ns.clone()));
        }
        k
    }
}

/// One watch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WatchKey {
    Secret(String, String),
    ConfigMap(String, String),
    Deployment(String, String),
    Events(String),
    Pods(String),
}

impl WatchKey {
    /// How `/ready` and the logs name it.
    pub fn label(&self) -> String {
        match self {
            WatchKey::Secret(ns, n) => format!("secret {ns}/{n}"),
            WatchKey::ConfigMap(ns, n) => format!("configmap {ns}/{n}"),
            WatchKey::Deployment(ns, n) => format!("deployment {ns}/{n}"),
            WatchKey::Events(ns) => format!("events in {ns}"),
            WatchKey::Pods(ns) => format!("meshed pods of control plane {ns}"),
        }
    }

    /// The `resource` label of `trust_rotation_watch_errors_total`.
    pub fn resource(&self) -> &'static str {
        match self {
            WatchKey::Secret(..) => "secrets",
            WatchKey::ConfigMap(..) => "configmaps",
            WatchKey::Deployment(..) => "deployments",
            WatchKey::Events(_) => "events",
            WatchKey::Pods(_) => "pods",
        }
    }
}

const ROTATIONS_WATCH: &str = "TrustAnchorRotations";

fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(WATCH_TIMEOUT_SECS)
}

// === waking the loop ===

/// Wakes the reconcile loop when a watch sees a change. It remembers when the first change
/// since the last look arrived, so the loop waits [`DEBOUNCE`] from that change rather than
/// from when it woke: a change that arrives during a long look is answered as soon as that
/// look ends, not a debounce later.
#[derive(Default)]
pub struct Wake {
    notify: Notify,
    since: Mutex<Option<tokio::time::Instant>>,
}

impl Wake {
    /// A watch saw a change.
    pub fn notify(&self) {
        self.since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(tokio::time::Instant::now);
        self.notify.notify_one();
    }

    /// Waits for a change, then until [`DEBOUNCE`] after the first change not yet looked at.
    async fn changed(&self) {
        self.notify.notified().await;
        if let Some(deadline) = self.deadline() {
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// When the changes not yet looked at have settled.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        let since = *self.since.lock().unwrap_or_else(|e| e.into_inner());
        since.map(|since| since + DEBOUNCE)
    }

    /// A look starts: it sees every change so far.
    fn looking(&self) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

// === the watches ===

/// The running watches; shared by the rotation watch, which changes them.
#[derive(Clone)]
pub struct Watches {
    client: kube::Client,
    wake: Arc<Wake>,
    health: Health,
    pods: Arc<PodCache>,
    running: Arc<Mutex<BTreeMap<WatchKey, AbortHandle>>>,
}

impl Watches {
    /// Starts watching the TrustAnchorRotations; they decide what else is watched.
    pub fn start(
        client: kube::Client,
        wake: Arc<Wake>,
        health: Health,
        pods: Arc<PodCache>,
    ) -> Self {
        let w = Self {
            client,
            wake,
            health,
            pods,
            running: Arc::default(),
        };
        w.spawn_rotation_watch();
        w
    }

    /// What is watched now.
    pub fn keys(&self) -> BTreeSet<WatchKey> {
        self.running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Watches exactly `targets`: starts what is new, stops what is gone.
    pub fn follow(&self, targets: &WatchTargets) {
        let wanted = targets.keys();
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        let gone: Vec<WatchKey> = running
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(h) = running.remove(&k) {
                h.abort();
            }
            self.health.unregister(&k.label());
            if let WatchKey::Pods(ns) = &k {
                self.pods.forget(ns);
            }
            info!(watch = %k.label(), "no rotation names it any more: stopped watching");
        }
        for k in wanted {
            if running.contains_key(&k) {
                continue;
            }
            self.health.register(&k.label(), k.resource());
            let handle = self.spawn(&k);
            debug!(watch = %k.label(), "watching");
            running.insert(k, handle);
        }
    }

    fn spawn(&self, key: &WatchKey) -> AbortHandle {
        let c = self.client.clone();
        match key {
            WatchKey::Secret(ns, n) => self.spawn_metadata(
                key,
                Api::<PartialObjectMeta<Secret>>::namespaced(c, ns),
                by_name(n),
            ),
            WatchKey::ConfigMap(ns, n) => self.spawn_metadata(
                key,
                Api::<PartialObjectMeta<ConfigMap>>::namespaced(c, ns),
                by_name(n),
            ),
            WatchKey::Deployment(ns, n) => self.spawn_metadata(
                key,
                Api::<PartialObjectMeta<Deployment>>::namespaced(c, ns),
                by_name(n),
            ),
            WatchKey::Events(ns) => self.spawn_metadata(
                key,
                Api::<PartialObjectMeta<Event>>::namespaced(c, ns),
                watcher::Config::default().timeout(WATCH_TIMEOUT_SECS),
            ),
            WatchKey::Pods(ns) => self.spawn_pods(key, ns.clone()),
        }
    }

    fn spawn_metadata<K>(&self, key: &WatchKey, api: Api<K>, config: watcher::Config) -> AbortHandle
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default,
    {
        let label = key.label();
        let (wake, health) = (self.wake.clone(), self.health.clone());
        tokio::spawn(async move {
            let mut stream = watcher(api, config).default_backoff().boxed();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        health.synced(&label);
                        wake.notify();
                    }
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                        health.ok(&label);
                        wake.notify();
                    }
                    Ok(_) => health.ok(&label),
                    Err(e) => {
                        health.error(&label, &e);
                        warn!(error = %e, watch = %label, "watch failed; retrying with backoff");
                    }
                }
            }
        })
        .abort_handle()
    }

    fn spawn_pods(&self, key: &WatchKey, linkerd_ns: String) -> AbortHandle {
        let label = key.label();
        let (client, wake, health, cache) = (
            self.client.clone(),
            self.wake.clone(),
            self.health.clone(),
            self.pods.clone(),
        );
        tokio::spawn(async move {
            let api: Api<Pod> = Api::all(client);
            let config = watcher::Config::default()
                .labels(&format!("{CONTROL_PLANE_NS_LABEL}={linkerd_ns}"))
                .timeout(WATCH_TIMEOUT_SECS);
            let mut stream = watcher(api, config).default_backoff().boxed();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(ev) => {
                        let relevant =
                            !matches!(ev, watcher::Event::Init | watcher::Event::InitApply(_));
                        let done = matches!(ev, watcher::Event::InitDone);
                        cache.apply(&linkerd_ns, ev);
                        if done {
                            health.synced(&label);
                        } else {
                            health.ok(&label);
                        }
                        if relevant {
                            wake.notify();
                        }
                    }
                    Err(e) => {
                        health.error(&label, &e);
                        cache.failed(&linkerd_ns, e.to_string(), Instant::now());
                        warn!(error = %e, watch = %label, "meshed pod watch failed; retrying with backoff");
                    }
                }
            }
        })
        .abort_handle()
    }

    /// Watches the TrustAnchorRotations: a new one, a spec change (generation), an approval
    /// (`trust.linkerd.io/approve`), a skip (`trust.linkerd.io/skip`) or a deletion wakes the loop and re-targets the other watches; the operator's own status writes do
    /// not.
    fn spawn_rotation_watch(&self) {
        self.health
            .register(ROTATIONS_WATCH, "trustanchorrotations");
        let this = self.clone();
        tokio::spawn(async move {
            let api: Api<TrustAnchorRotation> = Api::all(this.client.clone());
            // The generation, the spec and the approval annotation (an approval is a
            // metadata change: it wakes the loop at once rather than at the next resync).
            type Seen = (Option<i64>, TrustAnchorRotationSpec, Option<String>);
            // The approval and skip annotations (`linkerd trust approve` / `skip`), together.
            let approval = |o: &TrustAnchorRotation| {
                let a = o.metadata.annotations.as_ref()?;
                let get = |k: &str| a.get(k).cloned();
                match (
                    get(trust_rotation_steps::rotation::approval::ANNOTATION),
                    get(trust_rotation_steps::rotation::restarts::SKIP_ANNOTATION),
                ) {
                    (None, None) => None,
                    (x, y) => Some(format!(
                        "{}\n{}",
                        x.unwrap_or_default(),
                        y.unwrap_or_default()
                    )),
                }
            };
            let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
            let mut staging: Option<BTreeMap<String, Seen>> = None;
            let mut synced = false;
            let mut stream = watcher(api, watcher::Config::default().timeout(WATCH_TIMEOUT_SECS))
                .default_backoff()
                .boxed();
            while let Some(ev) = stream.next().await {
                let changed = match ev {
                    Ok(watcher::Event::Init) => {
                        staging = Some(BTreeMap::new());
                        false
                    }
                    Ok(watcher::Event::InitApply(o)) => {
                        if let Some(s) = staging.as_mut() {
                            let a = approval(&o);
                            s.insert(
                                o.metadata.name.clone().unwrap_or_default(),
                                (o.metadata.generation, o.spec, a),
                            );
                        }
                        false
                    }
                    Ok(watcher::Event::InitDone) => {
                        let fresh = staging.take().unwrap_or_default();
                        let changed = fresh != seen || !synced;
                        seen = fresh;
                        synced = true;
                        this.health.synced(ROTATIONS_WATCH);
                        changed
                    }
                    Ok(watcher::Event::Apply(o)) => {
                        this.health.ok(ROTATIONS_WATCH);
                        let name = o.metadata.name.clone().unwrap_or_default();
                        let a = approval(&o);
                        let entry = (o.metadata.generation, o.spec, a);
                        seen.insert(name, entry.clone()) != Some(entry)
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        this.health.ok(ROTATIONS_WATCH);
                        seen.remove(&o.metadata.name.clone().unwrap_or_default());
                        true
                    }
                    Err(e) => {
                        this.health.error(ROTATIONS_WATCH, &e);
                        warn!(error = %e, "TrustAnchorRotation watch failed; retrying with backoff");
                        false
                    }
                };
                if changed && synced {
                    let targets = WatchTargets::of_rotations(
                        seen.iter().map(|(n, (_, spec, _))| (n.as_str(), spec)),
                    );
                    this.follow(&targets);
                    this.wake.notify();
                }
            }
        });
    }
}

// === refusing a second rotation ===

/// What the status of a TrustAnchorRotation not named `cluster` says.
pub fn refusal_message(name: &str) -> String {
    format!(
        "TrustAnchorRotation {name} is refused and makes no change: a cluster has one TrustAnchorRotation, named \
         '{DEFAULT_ROTATION_NAME}' (two rotations of one mesh would restart its control plane against each other). \
         Delete this one (`kubectl delete trustanchorrotation {name}`) and edit '{DEFAULT_ROTATION_NAME}' instead. \
         The CRD installed lets such a name in: upgrade the trust-rotation-operator-crds chart, whose CRD refuses it"
    )
}

/// The status that refuses a TrustAnchorRotation named `name` (`None` when it already says
/// so).
pub fn refusal(
    prev: &TrustAnchorRotationStatus,
    name: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<TrustAnchorRotationStatus> {
    let message = refusal_message(name);
    if prev.blocking_message.as_deref() == Some(message.as_str())
        && prev.observed_generation == generation
    {
        return None;
    }
    let mut status = prev.clone();
    status.observed_generation = generation;
    status.blocking_message = Some(message.clone());
    set_condition(
        &mut status.conditions,
        CONDITION_BLOCKED,
        true,
        "DuplicateRotation",
        &message,
        now,
        generation,
    );
    set_condition(
        &mut status.conditions,
        CONDITION_READY,
        false,
        "DuplicateRotation",
        &message,
        now,
        generation,
    );
    Some(status)
}

// === the reconcile loop ===

/// What the reconcile loop works with (all of it the leader's).
#[derive(Clone)]
pub struct Reconciler {
    /// The leader's client: it sends nothing while this replica does not lead.
    pub client: kube::Client,
    pub config: RunnerConfig,
    pub metrics: Metrics,
    pub pods: Arc<PodCache>,
    pub identity: String,
    pub wake: Arc<Wake>,
    /// Checked by the runner before every status write and Event.
    pub gate: WriteGate,
}

/// Runs the rotation until `stop` fires (then lets the reconcile in flight finish for up to
/// [`DRAIN`]). Cancelling this future (on leadership loss) stops everything at once.
pub async fn run(r: &Reconciler, mut stop: watch::Receiver<bool>) {
    let api: Api<TrustAnchorRotation> = Api::all(r.client.clone());
    let events = Arc::new(KubeEvents::new(
        r.client.clone(),
        Some(r.identity.clone()),
        Some(r.gate.clone()),
    ));
    let mut runner: Option<(Option<String>, Runner)> = None;
    // Look at once: a new leader must not wait for a watch event.
    let mut next = tokio::time::Instant::now();
    let leading_since = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = r.wake.changed() => {}
            _ = tokio::time::sleep_until(next) => {}
        }
        r.wake.looking();
        let tars = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                warn!(error = %e, "listing TrustAnchorRotations failed; retrying");
                next = tokio::time::Instant::now() + Duration::from_secs(5);
                continue;
            }
        };
        let mut soonest = r.config.resync;
        for tar in &tars {
            let name = tar.metadata.name.clone().unwrap_or_default();
            if name == DEFAULT_ROTATION_NAME || !(r.gate)() {
                continue;
            }
            let generation = tar.metadata.generation;
            if let Some(status) = refusal(
                &tar.status.clone().unwrap_or_default(),
                &name,
                generation,
                trust_rotation_steps::runner::now_seconds(),
            ) {
                warn!(rotation = %name, "refusing a second TrustAnchorRotation");
                let store = KubeStatusStore::new(r.client.clone(), name.clone());
                if let Err(e) = store.apply(tar, &status).await {
                    warn!(rotation = %name, error = %e, "could not record the refusal; retrying");
                    soonest = soonest.min(Duration::from_secs(5));
                } else {
                    let note = status.blocking_message.clone().unwrap_or_default();
                    events
                        .publish(
                            tar,
                            &EventRecord {
                                kind: EventKind::Warning,
                                reason: "DuplicateRotation",
                                action: "Refuse".into(),
                                note,
                            },
                        )
                        .await;
                }
            }
        }
        let Some(tar) = tars
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some(DEFAULT_ROTATION_NAME))
        else {
            runner = None;
            next = tokio::time::Instant::now() + soonest;
            continue;
        };
        // A deleted and re-created rotation starts over with a fresh runner.
        if runner
            .as_ref()
            .is_none_or(|(uid, _)| *uid != tar.metadata.uid)
        {
            info!(
                rotation = DEFAULT_ROTATION_NAME,
                "managing TrustAnchorRotation"
            );
            let built = Runner::new(
                rotation::workflow(),
                Arc::new(KubeStatusStore::new(
                    r.client.clone(),
                    DEFAULT_ROTATION_NAME,
                )),
                events.clone(),
                r.client.clone(),
                r.config.clone(),
            )
            .with_metrics(r.metrics.clone())
            .with_pods(r.pods.clone())
            .with_write_gate(r.gate.clone());
            runner = Some((tar.metadata.uid.clone(), built));
        }
        let Some((_, current)) = runner.as_ref() else {
            continue;
        };
        // Its sync wakes the loop; once it fails, or past the grace period, the steps list
        // pods themselves.
        let mesh = &tar.spec.control_plane.namespace;
        if r.pods.first_list_pending(mesh) && leading_since.elapsed() < POD_SYNC_GRACE {
            debug!(mesh = %mesh, "waiting for the meshed-pod watch's first list");
            next = (tokio::time::Instant::now() + Duration::from_secs(1))
                .min(leading_since + POD_SYNC_GRACE);
            continue;
        }
        let fut = current.reconcile_read(tar.clone());
        tokio::pin!(fut);
        let result = tokio::select! {
            r = &mut fut => r,
            _ = stop.changed() => {
                match tokio::time::timeout(DRAIN, fut).await {
                    Ok(r) => log_result(&r.map(|_| ())),
                    Err(_) => warn!(rotation = DEFAULT_ROTATION_NAME, "reconcile did not finish within the drain period; it resumes on the next start"),
                }
                return;
            }
        };
        match result {
            Ok(q) => soonest = soonest.min(q.0),
            Err(e) if e.category() == store::CONFLICT => {
                debug!(error = %e, "the rotation changed while being reconciled; reading it again");
                soonest = soonest.min(CONFLICT_RETRY);
            }
            Err(e) => {
                log_result(&Err(e));
                soonest = soonest.min(Duration::from_secs(5));
            }
        }
        debug!(next_in = ?soonest, "reconciled");
        next = tokio::time::Instant::now() + soonest;
    }
}

fn log_result(r: &Result<(), trust_rotation_steps::step::StepError>) {
    if let Err(e) = r {
        warn!(rotation = DEFAULT_ROTATION_NAME, error = %e, category = e.category(), "reconcile failed; retrying");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn pod(ns: &str, name: &str, meshed: bool) -> Pod {
        let mut labels = BTreeMap::new();
        if meshed {
            labels.insert(CONTROL_PLANE_NS_LABEL.to_string(), "linkerd".to_string());
        }
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(cache: &PodCache) -> Option<Vec<String>> {
        cache.meshed_pods("linkerd").map(|ps| {
            let mut v: Vec<String> = ps.iter().map(|p| p.pod.to_string()).collect();
            v.sort();
            v
        })
    }

    #[test]
    fn watches_exactly_the_named_objects() {
        let t = WatchTargets::of(&[]);
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            t.secrets,
            BTreeSet::from([
                pair("cert-manager", "linkerd-trust-anchor"),
                pair("cert-manager", "linkerd-previous-anchor"),
                pair("linkerd", "linkerd-identity-issuer"),
            ])
        );
        assert_eq!(
            t.configmaps,
            BTreeSet::from([pair("linkerd", "linkerd-identity-trust-roots")])
        );
        assert_eq!(t.deployments.len(), 3);
        assert_eq!(t.meshes, BTreeSet::from(["linkerd".to_string()]));
        assert_eq!(t.keys().len(), 3 + 1 + 3 + 1 + 1);
    }

    #[test]
    fn only_the_cluster_rotation_with_a_usable_spec_is_followed() {
        let mut moved = TrustAnchorRotationSpec::default();
        moved.trust_roots.name = "roots".into();
        moved.control_plane.namespace = "mesh".into();
        let t = WatchTargets::of_rotations([
            ("cluster", &moved),
            ("second", &TrustAnchorRotationSpec::default()),
        ]);
        assert_eq!(
            t.configmaps,
            BTreeSet::from([("linkerd".to_string(), "roots".to_string())]),
            "the second rotation's objects are not watched"
        );
        assert_eq!(t.meshes, BTreeSet::from(["mesh".to_string()]));
        let mut bad = TrustAnchorRotationSpec::default();
        bad.control_plane.namespace = "Not_A_Namespace".into();
        assert_eq!(
            WatchTargets::of_rotations([("cluster", &bad)]),
            WatchTargets::of(&[]),
            "an invalid spec is blocked, not watched: the defaults are"
        );
    }

    #[test]
    fn a_second_rotation_is_refused_once_per_generation() {
        let now: Timestamp = "2026-11-29T16:00:00Z".parse().unwrap();
        let s = refusal(&Default::default(), "mesh-b", Some(1), now).expect("refused");
        let msg = s.blocking_message.clone().unwrap();
        assert!(
            msg.contains("mesh-b") && msg.contains("kubectl delete trustanchorrotation mesh-b"),
            "{msg}"
        );
        assert!(
            s.phase.is_none() && s.rotation.is_none(),
            "no rotation starts"
        );
        assert!(s.conditions.iter().any(|c| c.type_ == "Blocked"
            && c.status == "True"
            && c.reason == "DuplicateRotation"));
        assert!(s
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False"));
        assert_eq!(refusal(&s, "mesh-b", Some(1), now), None, "said once");
        assert!(
            refusal(&s, "mesh-b", Some(2), now).is_some(),
            "an edit is answered"
        );
    }

    #[test]
    fn a_change_during_a_long_look_is_answered_when_the_look_ends() {
        let wake = Wake::default();
        wake.looking();
        wake.notify(); // a pod changes while the look is in flight
        std::thread::sleep(DEBOUNCE); // the look takes longer than the debounce
        let deadline = wake.deadline().expect("the change is remembered");
        assert!(
            deadline <= tokio::time::Instant::now(),
            "the burst has had its debounce already: the next look starts at once"
        );
        wake.looking();
        assert_eq!(wake.deadline(), None, "the next look saw it");
    }

    #[test]
    fn a_burst_is_coalesced_from_its_first_change() {
        let wake = Wake::default();
        let before = tokio::time::Instant::now();
        wake.notify();
        std::thread::sleep(Duration::from_millis(100));
        wake.notify(); // later changes of the same burst do not push the look back
        let deadline = wake.deadline().expect("a change is waiting");
        assert!(deadline >= before + DEBOUNCE, "a burst gets its debounce");
        assert!(
            deadline < before + DEBOUNCE + Duration::from_millis(100),
            "measured from the burst's first change, not its last"
        );
    }

    #[test]
    fn pod_cache_answers_only_once_synced_and_follows_the_watch() {
        let cache = PodCache::default();
        assert_eq!(names(&cache), None, "unknown mesh: fall back to listing");
        cache.apply("linkerd", watcher::Event::Init);
        cache.apply("linkerd", watcher::Event::InitApply(pod("app", "a", true)));
        assert_eq!(names(&cache), None, "not synced yet");
        assert!(
            cache.apply("linkerd", watcher::Event::InitDone),
            "first sync reported"
        );
        assert_eq!(names(&cache), Some(vec!["app/a".into()]));
        cache.apply("linkerd", watcher::Event::Apply(pod("app", "b", true)));
        cache.apply("linkerd", watcher::Event::Apply(pod("app", "a", false))); // label removed
        assert_eq!(names(&cache), Some(vec!["app/b".into()]));
        cache.apply("linkerd", watcher::Event::Delete(pod("app", "b", true)));
        assert_eq!(names(&cache), Some(vec![]));
        // A relist replaces the contents atomically and keeps answering meanwhile.
        cache.apply("linkerd", watcher::Event::Apply(pod("app", "c", true)));
        cache.apply("linkerd", watcher::Event::Init);
        cache.apply("linkerd", watcher::Event::InitApply(pod("app", "d", true)));
        assert_eq!(names(&cache), Some(vec!["app/c".into()]));
        assert!(!cache.apply("linkerd", watcher::Event::InitDone));
        assert_eq!(names(&cache), Some(vec!["app/d".into()]));
        // A deletion the watch never delivered: the step that found the pod gone drops it.
        cache.forget_pod("linkerd", &PodRef::new("app", "d"));
        assert_eq!(names(&cache), Some(vec![]));
        cache.forget_pod("other", &PodRef::new("app", "d"));
    }

    #[test]
    fn the_first_look_waits_for_the_pod_watch_only_while_it_is_listing() {
        let cache = PodCache::default();
        assert!(cache.first_list_pending("linkerd"), "not started yet");
        cache.apply("linkerd", watcher::Event::Init);
        cache.apply("linkerd", watcher::Event::InitApply(pod("app", "a", true)));
        assert!(cache.first_list_pending("linkerd"), "listing");
        cache.failed("linkerd", "pods is forbidden".into(), Instant::now());
        assert!(
            !cache.first_list_pending("linkerd"),
            "a failing watch is not waited for: the steps list pods themselves"
        );
        cache.apply("linkerd", watcher::Event::Init);
        cache.apply("linkerd", watcher::Event::InitDone);
        assert!(!cache.first_list_pending("linkerd"), "synced");
    }

    #[test]
    fn a_pod_watch_failing_for_long_makes_the_cache_step_aside() {
        let cache = PodCache::default();
        cache.apply("linkerd", watcher::Event::Init);
        cache.apply("linkerd", watcher::Event::InitDone);
        let t0 = Instant::now() - crate::health::STALE_AFTER - Duration::from_secs(5);
        cache.failed("linkerd", "connection refused".into(), t0);
        assert_eq!(
            names(&cache),
            Some(vec![]),
            "one old failure: still answering"
        );
        cache.failed("linkerd", "connection refused".into(), Instant::now());
        assert_eq!(
            names(&cache),
            None,
            "failing since {:?}: steps must list pods themselves",
            t0
        );
        cache.apply("linkerd", watcher::Event::Apply(pod("app", "a", true)));
        assert_eq!(names(&cache), Some(vec!["app/a".into()]), "recovered");
        cache.forget("linkerd");
        assert_eq!(names(&cache), None);
    }
}

//! Wiring: metadata-only watches that wake the runner, and the reconcile loop that runs one
//! [`Runner`] per TrustAnchorRotation while this replica leads.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};
use trust_rotation_crds::{TrustAnchorRotation, TrustAnchorRotationSpec, CONTROL_PLANE_NS_LABEL};
use trust_rotation_steps::metrics::Metrics;
use trust_rotation_steps::observe::{meshed_pod_from, MeshedPod};
use trust_rotation_steps::rotation;
use trust_rotation_steps::runner::{KubeEvents, KubeStatusStore, Runner, RunnerConfig};
use trust_rotation_steps::snapshot::PodSource;

/// Coalesces bursts of watch events (a rollout touches many pods at once).
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How long a reconcile in flight may finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

/// Tracks initial syncs of every watch; `/ready` turns true once all are synced.
#[derive(Clone)]
pub struct SyncTracker {
    pending: Arc<AtomicUsize>,
    ready: Arc<AtomicBool>,
}

impl SyncTracker {
    pub fn new(ready: Arc<AtomicBool>) -> Self {
        Self {
            pending: Arc::new(AtomicUsize::new(0)),
            ready,
        }
    }

    fn register(&self) -> Arc<AtomicBool> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        Arc::new(AtomicBool::new(false))
    }

    fn synced(&self, flag: &AtomicBool) {
        if !flag.swap(true, Ordering::SeqCst) && self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            info!("watches synced; ready");
            self.ready.store(true, Ordering::SeqCst);
        }
    }
}

fn spawn_metadata_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    what: String,
    wake: Arc<Notify>,
    sync: SyncTracker,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let flag = sync.register();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::InitDone) => {
                    sync.synced(&flag);
                    wake.notify_one();
                }
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(e) => warn!(error = %e, watch = %what, "watch failed; retrying"),
            }
        }
    });
}

// === pod cache ===

#[derive(Default)]
struct MeshCache {
    synced: bool,
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
    fn meshed_pods(&self, linkerd_ns: &str) -> Option<Vec<MeshedPod>> {
        let meshes = self.meshes.read().ok()?;
        let mesh = meshes.get(linkerd_ns)?;
        mesh.synced.then(|| mesh.pods.values().cloned().collect())
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
    /// Applies one watch event; returns whether the cache just synced.
    fn apply(&self, linkerd_ns: &str, ev: watcher::Event<Pod>) -> bool {
        let Ok(mut meshes) = self.meshes.write() else {
            return false;
        };
        let mesh = meshes.entry(linkerd_ns.to_string()).or_default();
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
}

fn spawn_pod_watch(
    client: kube::Client,
    linkerd_ns: String,
    cache: Arc<PodCache>,
    wake: Arc<Notify>,
    sync: SyncTracker,
) {
    let flag = sync.register();
    tokio::spawn(async move {
        let api: Api<Pod> = Api::all(client);
        let config =
            watcher::Config::default().labels(&format!("{CONTROL_PLANE_NS_LABEL}={linkerd_ns}"));
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    let relevant =
                        !matches!(ev, watcher::Event::Init | watcher::Event::InitApply(_));
                    if cache.apply(&linkerd_ns, ev) {
                        sync.synced(&flag);
                    }
                    if relevant {
                        wake.notify_one();
                    }
                }
                Err(e) => {
                    warn!(error = %e, mesh = %linkerd_ns, "meshed pod watch failed; retrying")
                }
            }
        }
    });
}

/// Watches the TrustAnchorRotations themselves: spec changes (generation) and deletions wake
/// the loop; the operator's own status writes do not.
fn spawn_rotation_watch(client: kube::Client, wake: Arc<Notify>, sync: SyncTracker) {
    let flag = sync.register();
    tokio::spawn(async move {
        let api: Api<TrustAnchorRotation> = Api::all(client);
        let mut generations: HashMap<String, Option<i64>> = HashMap::new();
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    if generations.insert(name, o.metadata.generation)
                        != Some(o.metadata.generation)
                    {
                        wake.notify_one();
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    generations.remove(&o.metadata.name.clone().unwrap_or_default());
                    wake.notify_one();
                }
                Ok(watcher::Event::InitDone) => sync.synced(&flag),
                Ok(watcher::Event::Init) => {}
                Err(e) => warn!(error = %e, "TrustAnchorRotation watch failed; retrying"),
            }
        }
    });
}

/// The objects one rotation reads, by name: what the operator watches (by name, so that the
/// chart's least-privilege RBAC, which grants these by `resourceNames`, suffices).
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
}

fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

/// Starts every watch, for the objects the rotations that exist at start name (a rotation
/// created later is still reconciled on every resync; restart the operator to watch its
/// objects too). Returns the meshed-pod cache the watches feed.
pub async fn start_watches(
    client: &kube::Client,
    wake: Arc<Notify>,
    sync: SyncTracker,
) -> anyhow::Result<Arc<PodCache>> {
    let cache = Arc::new(PodCache::default());
    let tars = Api::<TrustAnchorRotation>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let specs: Vec<TrustAnchorRotationSpec> = tars.items.into_iter().map(|t| t.spec).collect();
    let targets = WatchTargets::of(&specs);
    spawn_rotation_watch(client.clone(), wake.clone(), sync.clone());
    for (ns, name) in &targets.secrets {
        spawn_metadata_watch(
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
            by_name(name),
            format!("secret {ns}/{name}"),
            wake.clone(),
            sync.clone(),
        );
    }
    for (ns, name) in &targets.configmaps {
        spawn_metadata_watch(
            Api::<PartialObjectMeta<ConfigMap>>::namespaced(client.clone(), ns),
            by_name(name),
            format!("configmap {ns}/{name}"),
            wake.clone(),
            sync.clone(),
        );
    }
    for (ns, name) in &targets.deployments {
        spawn_metadata_watch(
            Api::<PartialObjectMeta<Deployment>>::namespaced(client.clone(), ns),
            by_name(name),
            format!("deployment {ns}/{name}"),
            wake.clone(),
            sync.clone(),
        );
    }
    for ns in &targets.event_namespaces {
        spawn_metadata_watch(
            Api::<PartialObjectMeta<Event>>::namespaced(client.clone(), ns),
            watcher::Config::default(),
            format!("events in {ns}"),
            wake.clone(),
            sync.clone(),
        );
    }
    for ns in &targets.meshes {
        spawn_pod_watch(
            client.clone(),
            ns.clone(),
            cache.clone(),
            wake.clone(),
            sync.clone(),
        );
    }
    Ok(cache)
}

/// Runs every rotation until `stop` fires.
pub async fn run(
    client: kube::Client,
    config: RunnerConfig,
    metrics: Metrics,
    pods: Arc<PodCache>,
    identity: String,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<TrustAnchorRotation> = Api::all(client.clone());
    let events = Arc::new(KubeEvents::new(client.clone(), Some(identity)));
    let mut runners: HashMap<String, Runner> = HashMap::new();
    let mut next = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep_until(next) => {}
        }
        let tars = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                warn!(error = %e, "listing TrustAnchorRotations failed; retrying");
                next = tokio::time::Instant::now() + Duration::from_secs(5);
                continue;
            }
        };
        runners.retain(|name, _| {
            tars.iter()
                .any(|t| t.metadata.name.as_deref() == Some(name))
        });
        let mut soonest = config.resync;
        for tar in tars {
            let Some(name) = tar.metadata.name.clone() else {
                continue;
            };
            let runner = runners.entry(name.clone()).or_insert_with(|| {
                info!(rotation = %name, "managing TrustAnchorRotation");
                Runner::new(
                    rotation::workflow(),
                    Arc::new(KubeStatusStore::new(client.clone(), name.clone())),
                    events.clone(),
                    client.clone(),
                    config.clone(),
                )
                .with_metrics(metrics.clone())
                .with_pods(pods.clone())
            });
            let fut = runner.reconcile();
            tokio::pin!(fut);
            let result = tokio::select! {
                r = &mut fut => r,
                _ = stop.changed() => {
                    match tokio::time::timeout(DRAIN, fut).await {
                        Ok(r) => { log_result(&name, &r.map(|_| ())); }
                        Err(_) => warn!(rotation = %name, "reconcile did not finish within the drain period; it resumes on the next start"),
                    }
                    return;
                }
            };
            match result {
                Ok(r) => soonest = soonest.min(r.0),
                Err(e) => {
                    log_result(&name, &Err(e));
                    soonest = soonest.min(Duration::from_secs(5));
                }
            }
        }
        debug!(next_in = ?soonest, "reconciled");
        next = tokio::time::Instant::now() + soonest;
    }
}

fn log_result(name: &str, r: &Result<(), trust_rotation_steps::step::StepError>) {
    if let Err(e) = r {
        warn!(rotation = %name, error = %e, category = e.category(), "reconcile failed; retrying");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

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
    }
}

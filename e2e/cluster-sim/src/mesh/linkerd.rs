//! The Linkerd control plane: the proxy injector (a mutating admission hook that fails
//! open), its delayed view of the trust bundle, and the identity controller (bundle loaded
//! at start, issuer hot-reloaded only when it verifies against that bundle).

use super::pki::{self, Roots, Template};
use super::{
    configmaps, deployments, name_of, namespaces, ns_of, record_event, replicasets, secret_value,
    secrets, Shared,
};
use crate::store::{AdmissionHook, ResourceKey, Store, StoreError};
use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// === the injector's view of the bundle ===

/// What the injector's ConfigMap volume holds: every change to the trust-roots ConfigMap
/// becomes visible only after the volume propagation delay.
#[derive(Default)]
pub struct BundleView {
    history: Mutex<Vec<(Instant, Option<String>)>>,
    injectors: Mutex<HashSet<String>>,
}

impl BundleView {
    fn record(&self, value: Option<String>, delay: Duration) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.last().map(|(_, v)| v) == Some(&value) {
            return;
        }
        // The first bundle was there when the injector's volume was mounted (the injector
        // starts after the ConfigMap exists); later changes take the propagation delay.
        let first = h.iter().all(|(_, v)| v.is_none());
        let at = if first {
            Instant::now()
                .checked_sub(delay)
                .unwrap_or_else(Instant::now)
        } else {
            Instant::now()
        };
        h.push((at, value));
    }

    /// The bundle as the injector sees it now.
    pub fn current(&self, delay: Duration) -> Option<String> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        h.iter()
            .rev()
            .find(|(t, _)| now.duration_since(*t) >= delay)
            .and_then(|(_, v)| v.clone())
    }

    /// An injector pod started: its freshly mounted volume holds the bundle as it is now.
    pub(crate) fn injector_up(&self, pod: &str, bundle: Option<String>, delay: Duration) {
        let at = Instant::now()
            .checked_sub(delay)
            .unwrap_or_else(Instant::now);
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((at, bundle));
        self.injectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pod.to_string());
    }

    pub(crate) fn injector_down(&self, pod: &str) {
        self.injectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod);
    }

    fn injector_ready(&self) -> bool {
        !self
            .injectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

pub(crate) async fn run_bundle_view(shared: Arc<Shared>) {
    let Ok((_, mut rx)) = shared.store.watch(None) else {
        return;
    };
    let delay = shared.durations.volume_propagation;
    let read = |s: &Store| {
        s.get(
            &configmaps(),
            Some(super::LINKERD_NS),
            super::TRUST_ROOTS_CM,
        )
        .and_then(|cm| {
            cm["data"][super::TRUST_ROOTS_KEY]
                .as_str()
                .map(str::to_string)
        })
    };
    shared.bundle_view.record(read(&shared.store), delay);
    let relevant = |ev: &crate::store::WatchEvent| {
        ev.key == configmaps()
            && ev.namespace.as_deref() == Some(super::LINKERD_NS)
            && name_of(&ev.object) == super::TRUST_ROOTS_CM
    };
    loop {
        if !super::wait_for_change(&mut rx, &shared.cancel, None, &relevant).await {
            return;
        }
        shared.bundle_view.record(read(&shared.store), delay);
    }
}

// === the injector ===

pub struct Injector {
    shared: Arc<Shared>,
}

impl Injector {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn env_list(v: &Value) -> Vec<Value> {
    v.as_str()
        .and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok())
        .unwrap_or_default()
}

/// The owner label the injector puts on a pod: `linkerd.io/proxy-<kind>=<name>`, as
/// Linkerd's `GetOwnerKindAndName` finds it: the single owner, or its own single owner for
/// a ReplicaSet (a Deployment) or a Job (a CronJob). Bare pods get none.
fn owner_label(store: &Store, pod: &Value, ns: &str) -> Option<(String, String)> {
    let refs = pod["metadata"]["ownerReferences"].as_array()?;
    let [r] = refs.as_slice() else {
        return None;
    };
    let kind = r["kind"].as_str()?.to_string();
    let name = r["name"].as_str()?.to_string();
    let parent = match kind.as_str() {
        "ReplicaSet" => store.get(&replicasets(), Some(ns), &name),
        "Job" => store.get(&super::jobs(), Some(ns), &name),
        _ => None,
    };
    let (kind, name) = match parent
        .as_ref()
        .and_then(|p| p["metadata"]["ownerReferences"].as_array())
        .and_then(|a| match a.as_slice() {
            [g] => Some((
                g["kind"].as_str()?.to_string(),
                g["name"].as_str()?.to_string(),
            )),
            _ => None,
        }) {
        Some(grand) => grand,
        None => (kind, name),
    };
    let kind = kind.to_lowercase();
    matches!(
        kind.as_str(),
        "deployment"
            | "replicaset"
            | "replicationcontroller"
            | "statefulset"
            | "daemonset"
            | "job"
            | "cronjob"
    )
    .then_some((kind, name))
}

/// A Linkerd config annotation: the pod's, else its namespace's.
fn config_override<'a>(pod_ann: &'a Value, ns_ann: &'a Value, key: &str) -> Option<&'a str> {
    pod_ann[key].as_str().or(ns_ann[key].as_str())
}

/// Whether the proxy goes in as a native sidecar (`initContainers`, `restartPolicy: Always`).
fn native_sidecar(pod_ann: &Value, ns_ann: &Value) -> bool {
    [
        super::ANNOTATION_NATIVE_SIDECAR,
        "config.beta.linkerd.io/proxy-enable-native-sidecar",
        "config.alpha.linkerd.io/proxy-enable-native-sidecar",
    ]
    .iter()
    .find_map(|k| config_override(pod_ann, ns_ann, k))
    .is_some_and(|v| v == "true")
}

impl AdmissionHook for Injector {
    fn on_create(
        &self,
        store: &Store,
        key: &ResourceKey,
        pod: &mut Value,
    ) -> Result<(), StoreError> {
        if *key != super::pods() {
            return Ok(());
        }
        let ns = ns_of(pod).to_string();
        if super::kubelet::proxy_container(pod).is_some() {
            return Ok(());
        }
        let nsobj = store.get(&namespaces(), None, &ns);
        let ns_ann = nsobj
            .as_ref()
            .map(|n| n["metadata"]["annotations"].clone())
            .unwrap_or(Value::Null);
        let pod_ann = pod["metadata"]["annotations"].clone();
        let inject = pod_ann[super::ANNOTATION_INJECT]
            .as_str()
            .or(ns_ann[super::ANNOTATION_INJECT].as_str());
        // `ingress` mode injects the same proxy (it only changes routing).
        if !matches!(inject, Some("enabled" | "ingress")) {
            return Ok(());
        }
        // failurePolicy: Ignore. No ready injector, or no bundle: the pod starts unmeshed.
        if !self.shared.bundle_view.injector_ready() {
            tracing::warn!(namespace = %ns, "proxy injector unavailable: pod admitted without a proxy");
            return Ok(());
        }
        let Some(bundle) = self
            .shared
            .bundle_view
            .current(self.shared.durations.volume_propagation)
        else {
            tracing::warn!(namespace = %ns, "proxy injector has no trust bundle: pod admitted without a proxy");
            return Ok(());
        };
        let sa = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        // config.linkerd.io/admin-port: an integer, else the default (as the injector).
        let admin_port: u16 = match config_override(&pod_ann, &ns_ann, super::ANNOTATION_ADMIN_PORT) {
            Some(v) => v.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(namespace = %ns, value = v, "invalid {} annotation: using {}", super::ANNOTATION_ADMIN_PORT, super::PROXY_ADMIN_PORT);
                super::PROXY_ADMIN_PORT
            }),
            None => super::PROXY_ADMIN_PORT,
        };
        let native = native_sidecar(&pod_ann, &ns_ann);
        let mut env = vec![
            json!({"name": "LINKERD2_PROXY_LOG", "value": "warn,linkerd=info"}),
            json!({"name": "LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "value": format!("0.0.0.0:{admin_port}")}),
            json!({"name": "LINKERD2_PROXY_IDENTITY_DIR", "value": "/var/run/linkerd/identity/end-entity"}),
            json!({"name": super::ENV_TRUST_ANCHORS, "value": format!("{}\n", bundle.trim())}),
            json!({"name": super::ENV_LOCAL_NAME, "value": super::proxy::identity_name(&sa, &ns)}),
            json!({"name": "LINKERD2_PROXY_IDENTITY_SVC_ADDR", "value": "linkerd-identity-headless.linkerd.svc.cluster.local.:8080"}),
        ];
        // Additional env: namespace first, the workload's wins.
        for extra in env_list(&ns_ann[super::ANNOTATION_ADDITIONAL_ENV])
            .into_iter()
            .chain(env_list(&pod_ann[super::ANNOTATION_ADDITIONAL_ENV]))
        {
            let Some(name) = extra["name"].as_str().map(str::to_string) else {
                continue;
            };
            env.retain(|e| e["name"].as_str() != Some(name.as_str()));
            env.push(extra);
        }
        let mut proxy = json!({
            "name": super::PROXY_CONTAINER,
            "image": "cr.l5d.io/linkerd/proxy:edge-sim",
            "env": env,
            "ports": [
                {"name": "linkerd-proxy", "containerPort": 4143, "protocol": "TCP"},
                {"name": "linkerd-admin", "containerPort": admin_port, "protocol": "TCP"},
            ],
            "livenessProbe": {"httpGet": {"path": "/live", "port": admin_port}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": admin_port}},
        });
        let list = if native {
            proxy["restartPolicy"] = json!("Always");
            "initContainers"
        } else {
            "containers"
        };
        if !pod["spec"][list].is_array() {
            pod["spec"][list] = json!([]);
        }
        if let Some(cs) = pod["spec"][list].as_array_mut() {
            cs.insert(0, proxy);
        }
        if !pod["metadata"]["annotations"].is_object() {
            pod["metadata"]["annotations"] = json!({});
        }
        let ann = &mut pod["metadata"]["annotations"];
        ann[super::ANNOTATION_TRUST_ROOT_SHA256] = json!(pki::sha256_hex(bundle.as_bytes()));
        ann["linkerd.io/created-by"] = json!("linkerd/proxy-injector edge-sim");
        ann["linkerd.io/proxy-version"] = json!("edge-sim");
        ann["linkerd.io/identity-mode"] = json!("default");
        if !pod["metadata"]["labels"].is_object() {
            pod["metadata"]["labels"] = json!({});
        }
        let owner = owner_label(store, pod, &ns);
        let labels = &mut pod["metadata"]["labels"];
        labels[super::LABEL_CONTROL_PLANE_NS] = json!(super::LINKERD_NS);
        labels[super::LABEL_WORKLOAD_NS] = json!(ns);
        if let Some((kind, name)) = owner {
            labels[format!("linkerd.io/proxy-{kind}")] = json!(name);
        }
        Ok(())
    }
}

// === identity ===

pub(crate) struct IssuerState {
    chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
    not_after: i64,
    /// The issuer Secret's resourceVersion this state came from.
    source_rv: String,
}

/// One running identity controller (one per identity pod).
pub struct IdentityInstance {
    pub pod: String,
    roots: Roots,
    issuer: Mutex<IssuerState>,
    seen_rv: Mutex<String>,
}

fn load_issuer(store: &Store) -> Result<IssuerState, String> {
    let secret = store
        .get(&secrets(), Some(super::LINKERD_NS), super::ISSUER_SECRET)
        .ok_or_else(|| {
            format!(
                "secret {}/{} not found",
                super::LINKERD_NS,
                super::ISSUER_SECRET
            )
        })?;
    let crt = secret_value(&secret, "tls.crt").ok_or("issuer secret has no tls.crt")?;
    let key_pem = secret_value(&secret, "tls.key").ok_or("issuer secret has no tls.key")?;
    let chain = pki::parse_pem_chain(&crt).map_err(|e| format!("issuer tls.crt: {e}"))?;
    let key = pki::key_from_pem(&key_pem).map_err(|e| format!("issuer tls.key: {e}"))?;
    let not_after = pki::cert_info(&chain[0])
        .map_err(|e| format!("issuer tls.crt: {e}"))?
        .not_after;
    Ok(IssuerState {
        chain,
        key,
        not_after,
        source_rv: secret["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    })
}

impl IdentityInstance {
    /// Starts identity as the real one does: reads the trust bundle and the issuer, and
    /// refuses to start (the container crash-loops) when the issuer does not verify.
    pub(crate) fn start(store: &Store, ns: &str, pod: &str) -> Result<Arc<Self>, String> {
        let bundle = store
            .get(&configmaps(), Some(ns), super::TRUST_ROOTS_CM)
            .and_then(|cm| {
                cm["data"][super::TRUST_ROOTS_KEY]
                    .as_str()
                    .map(str::to_string)
            })
            .ok_or_else(|| {
                format!(
                    "trust anchors: ConfigMap {ns}/{} key {} not found",
                    super::TRUST_ROOTS_CM,
                    super::TRUST_ROOTS_KEY
                )
            })?;
        let roots =
            Roots::from_pem(&bundle).map_err(|e| format!("failed to read trust anchors: {e}"))?;
        let issuer = load_issuer(store)?;
        pki::issuer_verifies(&issuer.chain, &issuer.key, &roots).map_err(|e| format!("failed to verify issuer certificate: it must be a CA certificate signed by one of the trust anchors: {e}"))?;
        let rv = issuer.source_rv.clone();
        Ok(Arc::new(Self {
            pod: pod.to_string(),
            roots,
            issuer: Mutex::new(issuer),
            seen_rv: Mutex::new(rv),
        }))
    }

    /// Hot reload: takes the Secret's current issuer if it verifies against the bundle
    /// loaded at start, else keeps the old one. Emits the event either way.
    fn reload(&self, store: &Store) {
        let Ok(new) = load_issuer(store).map_err(|e| {
            emit(
                store,
                "Warning",
                "IssuerUpdateSkipped",
                &format!("Skipping issuer update as certs could not be read from disk: {e}"),
            );
        }) else {
            return;
        };
        {
            let mut seen = self.seen_rv.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == new.source_rv {
                return;
            }
            *seen = new.source_rv.clone();
        }
        {
            let cur = self.issuer.lock().unwrap_or_else(|e| e.into_inner());
            if cur.chain == new.chain {
                return;
            }
        }
        match pki::issuer_verifies(&new.chain, &new.key, &self.roots) {
            Ok(()) => {
                *self.issuer.lock().unwrap_or_else(|e| e.into_inner()) = new;
                emit(store, "Normal", "IssuerUpdated", "Updated identity issuer");
            }
            Err(e) => emit(
                store,
                "Warning",
                "IssuerUpdateSkipped",
                &format!("Skipping issuer update as the new issuer certificate does not verify against the trust anchors loaded at start ({} pod {}): {e}", super::LINKERD_NS, self.pod),
            ),
        }
    }

    fn issue(
        &self,
        shared: &Shared,
        name: &str,
        key: &KeyPair,
    ) -> Result<Vec<CertificateDer<'static>>, String> {
        let issuer = self.issuer.lock().unwrap_or_else(|e| e.into_inner());
        let now = pki::unix_now();
        let not_after =
            (now + shared.durations.workload_cert_lifetime.as_secs() as i64).min(issuer.not_after);
        if not_after <= now {
            return Err("identity issuer certificate has expired".into());
        }
        let t = Template {
            common_name: Some(name),
            dns_names: &[name.to_string()],
            is_ca: false,
            not_before: now - shared.durations.workload_cert_skew.as_secs() as i64,
            not_after,
            workload: true,
        };
        let leaf =
            pki::signed_by(&t, key, &issuer.chain[0], &issuer.key).map_err(|e| e.to_string())?;
        let mut chain = vec![leaf];
        chain.extend(issuer.chain.iter().cloned());
        Ok(chain)
    }
}

fn emit(store: &Store, etype: &str, reason: &str, message: &str) {
    let involved = store
        .get(&deployments(), Some(super::LINKERD_NS), "linkerd-identity")
        .map(|d| (*d).clone())
        .unwrap_or_else(|| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": super::LINKERD_NS, "name": "linkerd-identity"}}));
    record_event(store, &involved, etype, reason, message, "linkerd-identity");
}

/// The identity Service: the running identity controllers, taking CSRs in turn (as a
/// Service spreads connections), so during a rollout old and new pods both answer.
#[derive(Default)]
pub struct IdentityService {
    instances: Mutex<Vec<Arc<IdentityInstance>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl IdentityService {
    pub(crate) fn register(&self, i: Arc<IdentityInstance>) {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(i);
    }

    pub(crate) fn deregister(&self, i: &Arc<IdentityInstance>) {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|x| !Arc::ptr_eq(x, i));
    }

    fn all(&self) -> Vec<Arc<IdentityInstance>> {
        self.instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn certify(
        &self,
        shared: &Shared,
        name: &str,
        key: &KeyPair,
        local_pod: Option<&str>,
    ) -> Result<Vec<CertificateDer<'static>>, String> {
        let all = self.all();
        // The identity pod's own proxy talks to its local controller (localhost:8080).
        let inst = match local_pod {
            Some(pod) => all
                .iter()
                .find(|i| i.pod == pod)
                .cloned()
                .ok_or("local identity controller not running")?,
            None => {
                if all.is_empty() {
                    return Err("identity service unavailable: no running identity pod".into());
                }
                let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                all[turn % all.len()].clone()
            }
        };
        inst.issue(shared, name, key)
    }
}

/// Watches the issuer Secret; every running identity sees a change after the volume delay.
pub(crate) async fn run_issuer_watch(shared: Arc<Shared>) {
    let Ok((_, mut rx)) = shared.store.watch(None) else {
        return;
    };
    let relevant = |ev: &crate::store::WatchEvent| {
        ev.key == secrets()
            && ev.namespace.as_deref() == Some(super::LINKERD_NS)
            && name_of(&ev.object) == super::ISSUER_SECRET
    };
    loop {
        if !super::wait_for_change(&mut rx, &shared.cancel, None, &relevant).await {
            return;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(shared.durations.volume_propagation).await;
            for inst in shared.identity.all() {
                inst.reload(&shared.store);
            }
        });
    }
}

//! Observation of the mesh: which pods carry a Linkerd proxy, what trust bundle they were
//! injected with, and how to reach them. This is read-only and shared by the operator and the
//! CLI, so both agree on what a "meshed pod" is.
//!
//! A pod is meshed when it carries the `linkerd.io/control-plane-ns=<ns>` label the proxy
//! injector sets. Its proxy is the `linkerd-proxy` container, found among `containers` or, for
//! native sidecars, `initContainers`.

use crate::error::ErrorCategory;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use kube::api::{Api, ListParams};
use std::fmt;
use std::sync::Arc;
use trust_rotation_crds::defaults::{
    CONTROL_PLANE_NS_LABEL, PROXY_ADMIN_PORT, PROXY_CONTAINER, TRUST_ANCHORS_ENV,
    TRUST_ROOT_SHA256_ANNOTATION,
};

/// How many pods one list page asks for. Large enough to keep the number of round trips low on
/// big clusters, small enough that one page never strains the API server.
pub const LIST_PAGE_SIZE: u32 = 500;

/// A pod, by namespace and name. Displays as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a rotation needs to know about one meshed pod: its [`PodFacts`], shared.
///
/// Cloning is a reference count: the operator's pod cache hands every look all its pods, and
/// at 50,000 pods a deep copy per look was tens of MiB of garbage each time. Changing a field
/// (tests do) copies the facts first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshedPod(Arc<PodFacts>);

impl From<PodFacts> for MeshedPod {
    fn from(facts: PodFacts) -> Self {
        Self(Arc::new(facts))
    }
}

impl std::ops::Deref for MeshedPod {
    type Target = PodFacts;
    fn deref(&self) -> &PodFacts {
        &self.0
    }
}

impl std::ops::DerefMut for MeshedPod {
    fn deref_mut(&mut self) -> &mut PodFacts {
        Arc::make_mut(&mut self.0)
    }
}

/// What a rotation needs to know about one meshed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub pod: PodRef,
    /// The workload that owns the pod, as `kind/name` (for example `deployment/web`), from the
    /// `linkerd.io/proxy-<kind>` labels the injector sets.
    pub owner: Option<String>,
    pub service_account: String,
    /// `status.podIP`, when assigned.
    pub ip: Option<String>,
    /// The pod's `Ready` condition is `True`.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set: the pod is Terminating. Its proxy still serves
    /// (and is an mTLS peer) until the pod is gone, so it still counts.
    pub deleting: bool,
    /// `metadata.deletionTimestamp`: when a Terminating pod's grace period ends (the kubelet
    /// kills it then).
    pub deletion_deadline: Option<Timestamp>,
    /// The proxy's version: the injector's `linkerd.io/proxy-version` annotation, else the
    /// proxy image's tag.
    pub proxy_version: Option<Arc<str>>,
    /// The pod runs in the Linkerd control-plane namespace.
    pub control_plane: bool,
    /// A `linkerd-proxy` container exists (in `containers` or `initContainers`).
    pub has_proxy: bool,
    /// The `linkerd.io/trust-root-sha256` annotation.
    pub trust_root_sha256: Option<Arc<str>>,
    /// The proxy's inline `LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS` value. `None` when the variable
    /// is absent, empty, or comes from `valueFrom` (the control plane reads the ConfigMap; judge
    /// those pods by [`MeshedPod::proxy_started_at`] instead).
    pub trust_anchors_env: Option<Arc<str>>,
    /// `state.running.startedAt` of the `linkerd-proxy` container.
    pub proxy_started_at: Option<Timestamp>,
    /// `metadata.creationTimestamp`.
    pub created_at: Option<Timestamp>,
    /// The port the proxy's admin server (and its TLS probe endpoint) listens on: see
    /// [`proxy_admin_port`].
    pub admin_port: u16,
}

impl MeshedPod {
    /// Whether this pod counts towards convergence: outside the control plane. A Terminating
    /// pod counts until it is gone: its proxy serves with the bundle and certificate it has
    /// until then, so moving on without it (renewing the issuer, removing a root) breaks its
    /// mTLS while it still serves.
    pub fn is_workload(&self) -> bool {
        !self.control_plane
    }

    /// A Pending pod that never started: no IP, no proxy ever running. It holds no
    /// certificate yet (its proxy gets one from the issuer of the moment when it starts), so
    /// it is no target for certificate probes; its bundle still counts.
    pub fn never_started(&self) -> bool {
        self.ip.is_none() && self.proxy_started_at.is_none()
    }

    /// What a person does so that the injector gives this pod the current bundle: restart
    /// its workload, wait for its Job, or delete it when nothing owns it; for a Terminating
    /// pod, wait until it is gone.
    pub fn restart_command(&self) -> String {
        if self.deleting {
            let (ns, pod) = (&self.pod.namespace, &self.pod.name);
            return format!(
                "wait for pod {pod} to finish terminating (it serves until it is gone; kubectl -n {ns} get pod {pod})"
            );
        }
        let ns = &self.pod.namespace;
        let pod = &self.pod.name;
        match self.owner.as_deref().and_then(|o| o.split_once('/')) {
            Some((kind, name)) if RESTARTABLE_KINDS.contains(&kind) => {
                format!("kubectl -n {ns} rollout restart {kind}/{name}")
            }
            Some(("job", name)) => {
                format!("wait for Job {name} to finish (or kubectl -n {ns} delete job {name})")
            }
            Some(("cronjob", name)) => format!(
            "wait for pod {pod} of CronJob {name} to finish (or kubectl -n {ns} delete pod {pod}); \
             its next runs get the current bundle"
        ),
            Some(_) => format!("kubectl -n {ns} delete pod {pod}"),
            None => format!("kubectl -n {ns} delete pod {pod} (a bare pod: nothing recreates it)"),
        }
    }
}

/// How long past its grace period a Terminating pod may take to go away (the kubelet's
/// SIGKILL, its status report, the API server's removal) before it is called stuck.
pub const TERMINATION_SLACK: std::time::Duration = std::time::Duration::from_secs(30);

/// Names the pods among `waiting` (those a step waits for) that stay Terminating well past
/// their grace period: something holds them (a finalizer, a node that stopped reporting)
/// and waiting does not help. `None` when there are none.
pub fn stuck_terminating<'a>(
    waiting: impl IntoIterator<Item = &'a MeshedPod>,
    now: Timestamp,
) -> Option<String> {
    let stuck: Vec<&MeshedPod> = waiting
        .into_iter()
        .filter(|p| {
            p.deletion_deadline.is_some_and(|d| {
                now.duration_since(d).as_secs_f64() > TERMINATION_SLACK.as_secs_f64()
            })
        })
        .collect();
    if stuck.is_empty() {
        return None;
    }
    let names: Vec<String> = stuck
        .iter()
        .take(10)
        .map(|p| {
            let deadline = p
                .deletion_deadline
                .map(|d| d.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default();
            format!("{} (grace period ended {deadline})", p.pod)
        })
        .collect();
    let first = stuck[0];
    let (ns, name) = (&first.pod.namespace, &first.pod.name);
    Some(format!(
        "{} pod(s) stay Terminating past their grace period and still count, since their proxies may still serve with \
         the trust roots and certificate they had: {}. Find what holds each (`kubectl -n {ns} describe pod {name}`: a \
         finalizer, a node that stopped reporting) and remove that, or remove the pod (`kubectl -n {ns} delete pod {name} \
         --grace-period=0 --force`, only once its node is gone or its containers are stopped); the rotation continues \
         by itself once they are gone",
        stuck.len(),
        names.join(", ")
    ))
}

/// Owner kinds `kubectl rollout restart` understands.
const RESTARTABLE_KINDS: &[&str] = &["deployment", "statefulset", "daemonset"];

/// `linkerd.io/proxy-<kind>` labels the injector sets, most specific workload first.
const OWNER_LABEL_KINDS: &[&str] = &[
    "deployment",
    "statefulset",
    "daemonset",
    "cronjob",
    "job",
    "replicaset",
    "replicationcontroller",
];

/// Why observing the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("listing meshed pods (label selector {selector:?}) failed: {source}")]
    ListPods {
        selector: String,
        #[source]
        source: kube::Error,
    },
}

impl ObserveError {
    /// The Kubernetes client error underneath.
    pub fn kube(&self) -> &kube::Error {
        match self {
            ObserveError::ListPods { source, .. } => source,
        }
    }

    /// Its category, by the one classifier ([`ErrorCategory::of_kube`]).
    pub fn category(&self) -> ErrorCategory {
        ErrorCategory::of_kube(self.kube())
    }

    /// Whether retrying later may succeed without anyone changing anything (an expired list
    /// continuation, 410, included: the retry lists again from the start).
    pub fn is_transient(&self) -> bool {
        self.category().is_transient()
    }
}

/// The label selector of every pod meshed by the control plane in `linkerd_ns`.
pub fn meshed_selector(linkerd_ns: &str) -> String {
    format!("{CONTROL_PLANE_NS_LABEL}={linkerd_ns}")
}

/// Lists every meshed pod in the cluster, following list continuations so that large clusters
/// are read in pages of [`LIST_PAGE_SIZE`].
pub async fn list_meshed_pods(
    client: &kube::Client,
    linkerd_ns: &str,
) -> Result<Vec<MeshedPod>, ObserveError> {
    let selector = meshed_selector(linkerd_ns);
    let api: Api<Pod> = Api::all(client.clone());
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default()
            .labels(&selector)
            .limit(LIST_PAGE_SIZE);
        if let Some(t) = token.take() {
            lp = lp.continue_token(&t);
        }
        let page = api
            .list(&lp)
            .await
            .map_err(|source| ObserveError::ListPods {
                selector: selector.clone(),
                source,
            })?;
        out.extend(
            page.items
                .iter()
                .filter_map(|p| meshed_pod_from(p, linkerd_ns)),
        );
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(out)
}

/// Reads one pod. Returns `None` for a pod that is not meshed by `linkerd_ns` (no
/// `linkerd.io/control-plane-ns` label with that value) or that has no name or namespace.
pub fn meshed_pod_from(pod: &Pod, linkerd_ns: &str) -> Option<MeshedPod> {
    let meta = &pod.metadata;
    let labels = meta.labels.as_ref();
    if labels
        .and_then(|l| l.get(CONTROL_PLANE_NS_LABEL))
        .map(String::as_str)
        != Some(linkerd_ns)
    {
        return None;
    }
    // A finished pod (a Job's, an evicted one) runs no proxy: nothing to converge, nothing
    // that could hold a rotation, and it never serves mTLS again.
    if pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
    {
        return None;
    }
    let namespace = meta.namespace.clone().filter(|s| !s.is_empty())?;
    let name = meta.name.clone().filter(|s| !s.is_empty())?;
    let spec = pod.spec.as_ref();
    let proxy = spec.and_then(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .find(|c| c.name == PROXY_CONTAINER)
    });
    let status = pod.status.as_ref();
    let proxy_status = status.and_then(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .find(|c| c.name == PROXY_CONTAINER)
    });
    let owner = labels.and_then(|l| {
        OWNER_LABEL_KINDS.iter().find_map(|kind| {
            l.get(&format!("linkerd.io/proxy-{kind}"))
                .filter(|v| !v.is_empty())
                .map(|v| format!("{kind}/{v}"))
        })
    });
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    Some(MeshedPod::from(PodFacts {
        control_plane: namespace == linkerd_ns,
        pod: PodRef { namespace, name },
        owner,
        service_account: spec
            .and_then(|s| {
                s.service_account_name
                    .clone()
                    .or_else(|| s.service_account.clone())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        ip: status
            .and_then(|s| s.pod_ip.clone())
            .filter(|s| !s.is_empty()),
        ready,
        deleting: meta.deletion_timestamp.is_some(),
        deletion_deadline: meta.deletion_timestamp.as_ref().map(|t| t.0),
        proxy_version: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROXY_VERSION_ANNOTATION))
            .cloned()
            .filter(|v| !v.is_empty())
            .or_else(|| proxy.and_then(image_tag))
            .map(|v| ALIKE.share(&v, || Arc::from(v.as_str()))),
        has_proxy: proxy.is_some(),
        trust_root_sha256: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRUST_ROOT_SHA256_ANNOTATION))
            .map(|v| ALIKE.share(v, || Arc::from(v.as_str()))),
        trust_anchors_env: proxy.and_then(inline_trust_anchors),
        proxy_started_at: proxy_status.and_then(started_at),
        created_at: meta.creation_timestamp.as_ref().map(|t| t.0),
        admin_port: proxy_admin_port(proxy, meta.annotations.as_ref()),
    }))
}

/// The annotation the proxy injector sets to the proxy's version.
pub const PROXY_VERSION_ANNOTATION: &str = "linkerd.io/proxy-version";

/// The tag of a container's image (`cr.l5d.io/linkerd/proxy:edge-24.1.1` → `edge-24.1.1`).
fn image_tag(c: &Container) -> Option<String> {
    let image = c.image.as_deref()?;
    let image = image.split('@').next()?;
    let (_, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && !tag.is_empty()).then(|| tag.to_string())
}

/// The annotation that moves a pod's proxy admin server to another port.
pub const ADMIN_PORT_ANNOTATION: &str = "config.linkerd.io/admin-port";

/// Where the proxy's admin server listens: what the proxy itself reads
/// (`LINKERD2_PROXY_ADMIN_LISTEN_ADDR`, which the injector sets from
/// `config.linkerd.io/admin-port`), else the container's `linkerd-admin` port, else the pod's
/// annotation (a pod admitted before the injector wrote the env), else 4191.
pub fn proxy_admin_port(
    proxy: Option<&Container>,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> u16 {
    let from_env = || {
        proxy?
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "LINKERD2_PROXY_ADMIN_LISTEN_ADDR")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.rsplit_once(':'))
            .and_then(|(_, port)| port.trim().parse::<u16>().ok())
    };
    let from_port = || {
        proxy?
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("linkerd-admin"))
            .and_then(|p| u16::try_from(p.container_port).ok())
    };
    let from_annotation = || {
        annotations?
            .get(ADMIN_PORT_ANNOTATION)
            .and_then(|v| v.trim().parse::<u16>().ok())
    };
    from_env()
        .or_else(from_port)
        .or_else(from_annotation)
        .filter(|p| *p != 0)
        .unwrap_or(PROXY_ADMIN_PORT)
}

/// The proxies of a mesh were injected with a handful of distinct bundles: each pod's value is
/// shared with every other pod's that is equal to it.
static TRUST_ANCHORS: crate::intern::Interner<str> = crate::intern::Interner::new();

/// Short values most pods share (the bundle hash they were injected with, the proxy version):
/// a handful of distinct ones in a mesh, so one copy each.
static ALIKE: crate::intern::Interner<str> = crate::intern::Interner::new();

fn inline_trust_anchors(c: &Container) -> Option<Arc<str>> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == TRUST_ANCHORS_ENV)
        .and_then(|e| e.value.as_deref())
        .filter(|v| !v.trim().is_empty())
        .map(|v| TRUST_ANCHORS.share(v, || Arc::from(v)))
}

fn started_at(cs: &ContainerStatus) -> Option<Timestamp> {
    cs.state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("test pod is valid")
    }

    #[test]
    fn the_admin_port_is_where_the_proxy_listens() {
        let meshed = |proxy: serde_json::Value, annotations: serde_json::Value| {
            let p = pod(json!({
                "metadata": {"name": "web-1", "namespace": "emojivoto",
                             "labels": {"linkerd.io/control-plane-ns": "linkerd"},
                             "annotations": annotations},
                "spec": {"containers": [proxy]},
            }));
            meshed_pod_from(&p, "linkerd").expect("meshed").admin_port
        };
        let plain = json!({"name": "linkerd-proxy"});
        assert_eq!(meshed(plain.clone(), json!({})), 4191);
        // The annotation alone (the injector has not written the env).
        assert_eq!(
            meshed(plain, json!({"config.linkerd.io/admin-port": "9995"})),
            9995
        );
        // What the proxy reads wins over the annotation and the port name.
        let injected = json!({"name": "linkerd-proxy",
            "env": [{"name": "LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "value": "[::]:9990"}],
            "ports": [{"name": "linkerd-admin", "containerPort": 9991}]});
        assert_eq!(
            meshed(injected, json!({"config.linkerd.io/admin-port": "9995"})),
            9990
        );
        let named = json!({"name": "linkerd-proxy",
            "ports": [{"name": "linkerd-admin", "containerPort": 9991}]});
        assert_eq!(meshed(named, json!({})), 9991);
        // Nonsense falls back to the default.
        assert_eq!(
            meshed(
                json!({"name": "linkerd-proxy"}),
                json!({"config.linkerd.io/admin-port": "admin"})
            ),
            4191
        );
    }

    #[test]
    fn finished_pods_are_not_targets_and_each_kind_gets_its_own_fix() {
        for phase in ["Succeeded", "Failed"] {
            let mut v = web_pod();
            v["status"]["phase"] = json!(phase);
            assert!(
                meshed_pod_from(&pod(v), "linkerd").is_none(),
                "a {phase} pod has no proxy to converge"
            );
        }
        let mut v = web_pod();
        v["status"]["phase"] = json!("Running");
        assert!(meshed_pod_from(&pod(v), "linkerd").is_some());
        let with_owner = |kind: &str, name: &str| {
            let mut v = web_pod();
            v["metadata"]["labels"] = json!({
                "linkerd.io/control-plane-ns": "linkerd",
                format!("linkerd.io/proxy-{kind}"): name,
            });
            meshed_pod_from(&pod(v), "linkerd")
                .unwrap()
                .restart_command()
        };
        assert_eq!(
            with_owner("statefulset", "db"),
            "kubectl -n emojivoto rollout restart statefulset/db"
        );
        assert_eq!(
            with_owner("daemonset", "agent"),
            "kubectl -n emojivoto rollout restart daemonset/agent"
        );
        assert!(with_owner("job", "backfill").starts_with("wait for Job backfill to finish"));
        assert!(with_owner("cronjob", "nightly").contains("of CronJob nightly to finish"));
        let mut bare = web_pod();
        bare["metadata"]["labels"] = json!({"linkerd.io/control-plane-ns": "linkerd"});
        assert_eq!(
            meshed_pod_from(&pod(bare), "linkerd")
                .unwrap()
                .restart_command(),
            "kubectl -n emojivoto delete pod web-5f8c-abcde (a bare pod: nothing recreates it)"
        );
    }

    fn web_pod() -> serde_json::Value {
        json!({
            "metadata": {
                "name": "web-5f8c-abcde",
                "namespace": "emojivoto",
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "labels": {
                    "linkerd.io/control-plane-ns": "linkerd",
                    "linkerd.io/proxy-deployment": "web",
                    "linkerd.io/proxy-replicaset": "web-5f8c",
                },
                "annotations": { "linkerd.io/trust-root-sha256": "abc123" }
            },
            "spec": {
                "serviceAccountName": "web",
                "containers": [
                    { "name": "web-svc", "image": "web" },
                    { "name": "linkerd-proxy", "image": "proxy", "env": [
                        { "name": "OTHER", "value": "x" },
                        { "name": "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", "value": "PEM\n" }
                    ]}
                ]
            },
            "status": {
                "podIP": "127.0.3.4",
                "conditions": [{ "type": "Ready", "status": "True" }],
                "containerStatuses": [
                    { "name": "web-svc", "ready": true, "restartCount": 0, "image": "web", "imageID": "" },
                    { "name": "linkerd-proxy", "ready": true, "restartCount": 0, "image": "proxy", "imageID": "",
                      "state": { "running": { "startedAt": "2026-01-02T03:04:07Z" } } }
                ]
            }
        })
    }

    #[test]
    fn reads_a_meshed_workload_pod() {
        let m = meshed_pod_from(&pod(web_pod()), "linkerd").expect("meshed");
        assert_eq!(m.pod.to_string(), "emojivoto/web-5f8c-abcde");
        assert_eq!(m.owner.as_deref(), Some("deployment/web"));
        assert_eq!(m.service_account, "web");
        assert_eq!(m.ip.as_deref(), Some("127.0.3.4"));
        assert!(m.ready && m.has_proxy && !m.deleting && !m.control_plane);
        assert!(m.is_workload());
        assert_eq!(m.trust_root_sha256.as_deref(), Some("abc123"));
        assert_eq!(m.trust_anchors_env.as_deref(), Some("PEM\n"));
        assert_eq!(m.proxy_started_at.map(|t| t.as_second()), Some(1767323047));
        assert_eq!(m.created_at.map(|t| t.as_second()), Some(1767323045));
        assert_eq!(
            m.restart_command(),
            "kubectl -n emojivoto rollout restart deployment/web"
        );
    }

    #[test]
    fn ignores_pods_of_another_control_plane_or_unmeshed() {
        assert!(meshed_pod_from(&pod(web_pod()), "linkerd-other").is_none());
        let mut v = web_pod();
        v["metadata"]["labels"] = json!({ "app": "web" });
        assert!(meshed_pod_from(&pod(v), "linkerd").is_none());
    }

    #[test]
    fn finds_native_sidecar_proxy_in_init_containers() {
        let mut v = web_pod();
        let proxy = v["spec"]["containers"][1].clone();
        v["spec"]["containers"] = json!([{ "name": "web-svc" }]);
        v["spec"]["initContainers"] = json!([
            { "name": "linkerd-init" },
            { "restartPolicy": "Always", "name": proxy["name"], "env": proxy["env"] }
        ]);
        let status = v["status"]["containerStatuses"][1].clone();
        v["status"]["containerStatuses"] = json!([]);
        v["status"]["initContainerStatuses"] = json!([status]);
        let m = meshed_pod_from(&pod(v), "linkerd").unwrap();
        assert!(m.has_proxy);
        assert_eq!(m.trust_anchors_env.as_deref(), Some("PEM\n"));
        assert!(m.proxy_started_at.is_some());
    }

    #[test]
    fn control_plane_pod_with_value_from_has_no_inline_env() {
        let mut v = web_pod();
        v["metadata"]["namespace"] = json!("linkerd");
        v["metadata"]["labels"] = json!({
            "linkerd.io/control-plane-ns": "linkerd",
            "linkerd.io/proxy-deployment": "linkerd-destination",
        });
        v["spec"]["containers"][1]["env"] = json!([{
            "name": "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            "valueFrom": { "configMapKeyRef": { "name": "linkerd-identity-trust-roots", "key": "ca-bundle.crt" } }
        }]);
        let m = meshed_pod_from(&pod(v), "linkerd").unwrap();
        assert!(m.control_plane);
        assert!(!m.is_workload());
        assert_eq!(m.trust_anchors_env, None);
        assert!(m.proxy_started_at.is_some());
    }

    #[test]
    fn empty_env_value_and_missing_proxy() {
        let mut v = web_pod();
        v["spec"]["containers"][1]["env"][1]["value"] = json!("  ");
        assert_eq!(
            meshed_pod_from(&pod(v), "linkerd")
                .unwrap()
                .trust_anchors_env,
            None
        );

        let mut v = web_pod();
        v["spec"]["containers"] = json!([{ "name": "web-svc" }]);
        v["status"] = json!({});
        let m = meshed_pod_from(&pod(v), "linkerd").unwrap();
        assert!(!m.has_proxy);
        assert!(!m.ready);
        assert_eq!(m.ip, None);
        assert_eq!(m.proxy_started_at, None);
    }

    #[test]
    fn the_proxy_version_comes_from_the_injector_annotation_else_the_image_tag() {
        let mut v = web_pod();
        assert_eq!(
            meshed_pod_from(&pod(v.clone()), "linkerd")
                .unwrap()
                .proxy_version,
            None,
            "an untagged image and no annotation"
        );
        v["spec"]["containers"][1]["image"] = json!("cr.l5d.io/linkerd/proxy:edge-24.11.8");
        assert_eq!(
            meshed_pod_from(&pod(v.clone()), "linkerd")
                .unwrap()
                .proxy_version
                .as_deref(),
            Some("edge-24.11.8")
        );
        v["spec"]["containers"][1]["image"] = json!("registry:5000/proxy");
        assert_eq!(
            meshed_pod_from(&pod(v.clone()), "linkerd")
                .unwrap()
                .proxy_version,
            None,
            "a registry port is no tag"
        );
        v["metadata"]["annotations"]["linkerd.io/proxy-version"] = json!("stable-2.14.10");
        assert_eq!(
            meshed_pod_from(&pod(v), "linkerd")
                .unwrap()
                .proxy_version
                .as_deref(),
            Some("stable-2.14.10")
        );
    }

    #[test]
    fn a_pending_pod_that_never_started_is_no_certificate_target_but_counts() {
        let running = meshed_pod_from(&pod(web_pod()), "linkerd").unwrap();
        assert!(!running.never_started());
        let mut v = web_pod();
        v["status"] = json!({ "phase": "Pending" });
        let pending = meshed_pod_from(&pod(v), "linkerd").unwrap();
        assert!(pending.never_started() && pending.is_workload());
    }

    #[test]
    fn deleting_bare_pod_and_defaults() {
        let mut v = web_pod();
        v["metadata"]["labels"] = json!({ "linkerd.io/control-plane-ns": "linkerd" });
        v["spec"]["serviceAccountName"] = json!(null);
        v["status"]["podIP"] = json!("");
        let m = meshed_pod_from(&pod(v.clone()), "linkerd").unwrap();
        assert!(!m.deleting);
        assert_eq!(m.owner, None);
        assert_eq!(m.service_account, "default");
        assert_eq!(m.ip, None);
        assert_eq!(
            m.restart_command(),
            "kubectl -n emojivoto delete pod web-5f8c-abcde (a bare pod: nothing recreates it)"
        );
        // Terminating, it still serves: it counts until it is gone, and the fix is to wait.
        v["metadata"]["deletionTimestamp"] = json!("2026-01-02T04:00:00Z");
        let m = meshed_pod_from(&pod(v), "linkerd").unwrap();
        assert!(m.deleting && m.is_workload());
        assert_eq!(
            m.restart_command(),
            "wait for pod web-5f8c-abcde to finish terminating (it serves until it is gone; kubectl -n emojivoto get pod web-5f8c-abcde)"
        );
    }

    #[test]
    fn owner_prefers_the_workload_over_its_replicaset() {
        let mut v = web_pod();
        v["metadata"]["labels"] = json!({
            "linkerd.io/control-plane-ns": "linkerd",
            "linkerd.io/proxy-replicaset": "web-5f8c",
        });
        let m = meshed_pod_from(&pod(v.clone()), "linkerd").unwrap();
        assert_eq!(m.owner.as_deref(), Some("replicaset/web-5f8c"));
        assert_eq!(
            m.restart_command(),
            "kubectl -n emojivoto delete pod web-5f8c-abcde"
        );
        v["metadata"]["labels"]["linkerd.io/proxy-statefulset"] = json!("db");
        let m = meshed_pod_from(&pod(v), "linkerd").unwrap();
        assert_eq!(m.owner.as_deref(), Some("statefulset/db"));
    }
}

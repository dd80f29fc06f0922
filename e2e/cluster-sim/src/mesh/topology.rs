//! Topologies: `empty`, and `demo` = cert-manager with the user guide's PKI, the trust-roots
//! ConfigMap seeded from the anchor, the Linkerd control plane, and an emojivoto-like meshed
//! application; `demo-all-kinds` = `demo` on three Nodes plus a StatefulSet (with a
//! PodDisruptionBudget), a DaemonSet and a CronJob in the meshed namespace; `pods` adds N
//! meshed pods across many namespaces (Deployments; with `demo-all-kinds` spread over
//! Deployments, StatefulSets, DaemonSets, plus one CronJob per namespace).

use super::{
    certificates, cluster_issuers, condition_true, configmaps, deployments, issuers, key,
    namespaces, secret_value, secrets, MeshConfig, Shared,
};
use crate::store::{Store, StoreError};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Which objects the simulated cluster starts with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Topology {
    /// Nothing but what the API server registers.
    #[default]
    Empty,
    /// cert-manager PKI, Linkerd control plane and the emojivoto application.
    Demo,
    /// `Demo` on three Nodes, plus a StatefulSet, a DaemonSet and a CronJob in emojivoto.
    DemoAllKinds,
}

impl std::str::FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "empty" => Ok(Self::Empty),
            "demo" => Ok(Self::Demo),
            "demo-all-kinds" => Ok(Self::DemoAllKinds),
            other => Err(format!(
                "unknown topology {other:?}: expected \"empty\", \"demo\" or \"demo-all-kinds\""
            )),
        }
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty",
            Self::Demo => "demo",
            Self::DemoAllKinds => "demo-all-kinds",
        })
    }
}

pub(crate) struct Progress {
    done: AtomicBool,
    error: std::sync::Mutex<Option<String>>,
}

fn create_or_keep(
    store: &Store,
    k: &crate::store::ResourceKey,
    obj: Value,
) -> Result<(), StoreError> {
    match store.create(k, obj) {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn progress() -> Arc<Progress> {
    Arc::new(Progress {
        done: AtomicBool::new(false),
        error: std::sync::Mutex::new(None),
    })
}

/// Starts creating the topology's objects (in the order a human would install them).
pub(crate) fn create(shared: &Arc<Shared>, cfg: &MeshConfig) -> anyhow::Result<()> {
    if cfg.topology == Topology::Empty && cfg.pods == 0 {
        shared.topology.done.store(true, Ordering::SeqCst);
        return Ok(());
    }
    let shared = shared.clone();
    let cfg = cfg.clone();
    tokio::spawn(async move {
        if let Err(e) = build(&shared, &cfg).await {
            tracing::error!(error = %e, "creating the topology failed");
            *shared
                .topology
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        }
        shared.topology.done.store(true, Ordering::SeqCst);
    });
    Ok(())
}

async fn wait_until(shared: &Shared, what: &str, f: impl Fn(&Store) -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !f(&shared.store) {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        if shared.cancel.is_cancelled() {
            anyhow::bail!("cancelled");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn namespace(name: &str, labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels, "annotations": annotations}})
}

fn service_account(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}})
}

async fn build(shared: &Shared, cfg: &MeshConfig) -> anyhow::Result<()> {
    let store = &shared.store;
    let cm_ns = super::CERT_MANAGER_NS;
    let l5d = super::LINKERD_NS;
    let sas = key("", "serviceaccounts");
    let all_kinds = cfg.topology == Topology::DemoAllKinds;
    if all_kinds {
        // The Nodes register first, so every pod is scheduled to one.
        for i in 1..=NODES {
            create_or_keep(
                store,
                &super::nodes(),
                node(&format!("node-{i}"), shared.ips.allocate()),
            )?;
        }
    }
    // cert-manager and the guide's PKI.
    create_or_keep(
        store,
        &namespaces(),
        namespace(
            cm_ns,
            json!({"kubernetes.io/metadata.name": cm_ns}),
            json!({}),
        ),
    )?;
    create_or_keep(
        store,
        &namespaces(),
        namespace(
            l5d,
            json!({"kubernetes.io/metadata.name": l5d, super::LABEL_IS_CONTROL_PLANE: "true", "config.linkerd.io/admission-webhooks": "disabled", "linkerd.io/control-plane-ns": l5d}),
            json!({}),
        ),
    )?;
    // cert-manager's own Deployments (what `linkerd trust check --pre` looks for).
    for (component, name) in [
        ("controller", "cert-manager"),
        ("cainjector", "cert-manager-cainjector"),
        ("webhook", "cert-manager-webhook"),
    ] {
        create_or_keep(store, &sas, service_account(cm_ns, name))?;
        create_or_keep(
            store,
            &deployments(),
            cert_manager_deployment(component, name),
        )?;
    }
    create_or_keep(
        store,
        &issuers(),
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
            "metadata": {"name": "linkerd-trust-root-issuer", "namespace": cm_ns},
            "spec": {"selfSigned": {}},
        }),
    )?;
    create_or_keep(
        store,
        &certificates(),
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "linkerd-trust-anchor", "namespace": cm_ns},
            "spec": {
                "isCA": true, "commonName": "root.linkerd.cluster.local", "secretName": "linkerd-trust-anchor",
                "duration": "8760h0m0s", "renewBefore": "7320h0m0s",
                "privateKey": {"algorithm": "ECDSA", "rotationPolicy": "Always"},
                "issuerRef": {"name": "linkerd-trust-root-issuer", "kind": "Issuer", "group": "cert-manager.io"},
            },
        }),
    )?;
    create_or_keep(
        store,
        &cluster_issuers(),
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
            "metadata": {"name": "linkerd-identity-issuer"},
            "spec": {"ca": {"secretName": "linkerd-trust-anchor"}},
        }),
    )?;
    create_or_keep(
        store,
        &certificates(),
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "linkerd-identity-issuer", "namespace": l5d},
            "spec": {
                "isCA": true, "commonName": "identity.linkerd.cluster.local", "dnsNames": ["identity.linkerd.cluster.local"],
                "secretName": "linkerd-identity-issuer", "duration": "48h0m0s", "renewBefore": "25h0m0s",
                "privateKey": {"algorithm": "ECDSA"},
                "usages": ["cert sign", "crl sign", "server auth", "client auth"],
                "issuerRef": {"name": "linkerd-identity-issuer", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            },
        }),
    )?;
    wait_until(shared, "the trust anchor Secret", |s| {
        s.get(&secrets(), Some(cm_ns), "linkerd-trust-anchor")
            .is_some()
    })
    .await?;
    let anchor = store
        .get(&secrets(), Some(cm_ns), "linkerd-trust-anchor")
        .and_then(|s| secret_value(&s, "tls.crt"))
        .ok_or_else(|| anyhow::anyhow!("the trust anchor Secret has no tls.crt"))?;
    create_or_keep(
        store,
        &configmaps(),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": super::TRUST_ROOTS_CM, "namespace": l5d, "labels": {"linkerd.io/control-plane-component": "identity", "linkerd.io/control-plane-ns": l5d}},
            "data": {super::TRUST_ROOTS_KEY: anchor},
        }),
    )?;
    wait_until(shared, "the identity issuer Secret", |s| {
        s.get(&secrets(), Some(l5d), super::ISSUER_SECRET).is_some()
    })
    .await?;
    let bundle_sha = super::pki::sha256_hex(anchor.as_bytes());
    for (component, deploy, container) in [
        ("identity", "linkerd-identity", "identity"),
        ("destination", "linkerd-destination", "destination"),
        ("proxy-injector", "linkerd-proxy-injector", "proxy-injector"),
    ] {
        create_or_keep(store, &sas, service_account(l5d, deploy))?;
        create_or_keep(
            store,
            &deployments(),
            control_plane_deployment(component, deploy, container, &bundle_sha),
        )?;
    }
    wait_until(shared, "the proxy injector", |s| {
        deployment_done(s, l5d, "linkerd-proxy-injector")
    })
    .await?;

    // The application.
    create_or_keep(
        store,
        &namespaces(),
        namespace(
            "emojivoto",
            json!({"kubernetes.io/metadata.name": "emojivoto"}),
            json!({super::ANNOTATION_INJECT: "enabled"}),
        ),
    )?;
    for (app, sa) in [
        ("web", "web"),
        ("emoji", "emoji"),
        ("voting", "voting"),
        ("vote-bot", "default"),
    ] {
        create_or_keep(store, &sas, service_account("emojivoto", sa))?;
        create_or_keep(
            store,
            &deployments(),
            app_deployment(
                "emojivoto",
                app,
                sa,
                1,
                &format!("docker.l5d.io/buoyantio/emojivoto-{app}:v11"),
            ),
        )?;
    }

    if all_kinds {
        all_kinds_workloads(store, "emojivoto", &shared.durations)?;
    }

    // Scale pods: 100 per namespace, Deployments of up to 10 replicas (with
    // demo-all-kinds: 40% Deployments, 40% StatefulSets, 20% DaemonSets, and a CronJob).
    let mut left = cfg.pods;
    let mut ns_i = 0;
    while left > 0 {
        let ns = format!("scale-{ns_i:03}");
        create_or_keep(
            store,
            &namespaces(),
            namespace(
                &ns,
                json!({"kubernetes.io/metadata.name": ns}),
                json!({super::ANNOTATION_INJECT: "enabled"}),
            ),
        )?;
        create_or_keep(store, &sas, service_account(&ns, "default"))?;
        let mut in_ns = left.min(100);
        left -= in_ns;
        let mut d_i = 0;
        if all_kinds {
            let mut sts = in_ns * 2 / 5;
            let mut ds = (in_ns / 5) / NODES;
            in_ns -= sts + ds * NODES;
            let mut i = 0;
            while sts > 0 {
                let r = sts.min(10);
                sts -= r;
                create_or_keep(
                    store,
                    &super::statefulsets(),
                    statefulset(
                        &ns,
                        &format!("db-{i:02}"),
                        "default",
                        r as i64,
                        "registry.sim/scale-db:v1",
                    ),
                )?;
                i += 1;
            }
            let mut i = 0;
            while ds > 0 {
                ds -= 1;
                create_or_keep(
                    store,
                    &super::daemonsets(),
                    daemonset(
                        &ns,
                        &format!("agent-{i:02}"),
                        "default",
                        "registry.sim/scale-agent:v1",
                    ),
                )?;
                i += 1;
            }
            create_or_keep(
                store,
                &super::cronjobs(),
                cronjob(&ns, "report", "default", &shared.durations),
            )?;
        }
        while in_ns > 0 {
            let r = in_ns.min(10);
            in_ns -= r;
            create_or_keep(
                store,
                &deployments(),
                app_deployment(
                    &ns,
                    &format!("svc-{d_i:02}"),
                    "default",
                    r as i64,
                    "registry.sim/scale:v1",
                ),
            )?;
            d_i += 1;
        }
        ns_i += 1;
    }
    Ok(())
}

/// How many Nodes `demo-all-kinds` has.
pub const NODES: usize = 3;

fn node(name: &str, ip: std::net::Ipv4Addr) -> Value {
    let now = super::now_rfc3339();
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
        }},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": now},
            ],
            "addresses": [{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": name}],
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "5000"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "5000"},
            "nodeInfo": {"kubeletVersion": super::super::api::discovery::GIT_VERSION, "containerRuntimeVersion": "cluster-sim://1", "operatingSystem": "linux", "architecture": "amd64", "osImage": "cluster-sim", "kernelVersion": "6.0.0", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        },
    })
}

/// The StatefulSet, its PodDisruptionBudget, the DaemonSet and the CronJob of
/// `demo-all-kinds`.
fn all_kinds_workloads(store: &Store, ns: &str, d: &super::Durations) -> anyhow::Result<()> {
    let sas = key("", "serviceaccounts");
    for sa in ["vote-store", "node-agent", "nightly-report"] {
        create_or_keep(store, &sas, service_account(ns, sa))?;
    }
    create_or_keep(
        store,
        &super::statefulsets(),
        statefulset(
            ns,
            "vote-store",
            "vote-store",
            2,
            "docker.l5d.io/buoyantio/emojivoto-store:v11",
        ),
    )?;
    create_or_keep(
        store,
        &super::pdbs(),
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "vote-store", "namespace": ns},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "vote-store"}}},
        }),
    )?;
    create_or_keep(
        store,
        &super::daemonsets(),
        daemonset(
            ns,
            "node-agent",
            "node-agent",
            "docker.l5d.io/buoyantio/node-agent:v1",
        ),
    )?;
    create_or_keep(
        store,
        &super::cronjobs(),
        cronjob(ns, "nightly-report", "nightly-report", d),
    )?;
    Ok(())
}

fn statefulset(ns: &str, app: &str, sa: &str, replicas: i64, image: &str) -> Value {
    let mut s = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": app, "namespace": ns, "labels": {"app.kubernetes.io/name": app}},
        "spec": {
            "replicas": replicas, "serviceName": app,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"serviceAccountName": sa, "containers": [{"name": app, "image": image}]},
            },
        },
    });
    crate::api::workloads::default_workload(&mut s);
    s
}

fn daemonset(ns: &str, app: &str, sa: &str, image: &str) -> Value {
    let mut s = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": app, "namespace": ns, "labels": {"app.kubernetes.io/name": app}},
        "spec": {
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"serviceAccountName": sa, "containers": [{"name": app, "image": image}]},
            },
        },
    });
    crate::api::workloads::default_workload(&mut s);
    s
}

/// A CronJob every two schedule minutes whose meshed pods (native-sidecar proxy, as Linkerd
/// recommends for Jobs) run for 60% of a schedule minute and succeed.
fn cronjob(ns: &str, name: &str, sa: &str, d: &super::Durations) -> Value {
    let run = d.cron_minute.as_secs_f64() * 0.6;
    let mut s = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "schedule": "*/2 * * * *",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {
                "backoffLimit": 2,
                "template": {
                    "metadata": {
                        "labels": {"app": name},
                        "annotations": {super::ANNOTATION_NATIVE_SIDECAR: "true"},
                    },
                    "spec": {
                        "serviceAccountName": sa, "restartPolicy": "Never",
                        "containers": [{"name": "report", "image": "registry.sim/report:v1", "command": ["sh", "-c", format!("echo building the report; sleep {run:.1}")]}],
                    },
                },
            }},
        },
    });
    crate::api::workloads::default_workload(&mut s);
    s
}

fn control_plane_deployment(
    component: &str,
    name: &str,
    container: &str,
    bundle_sha: &str,
) -> Value {
    let l5d = super::LINKERD_NS;
    let labels = json!({
        super::LABEL_COMPONENT: component, super::LABEL_CONTROL_PLANE_NS: l5d,
        "linkerd.io/proxy-deployment": name, super::LABEL_WORKLOAD_NS: l5d,
    });
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": l5d,
            "labels": {super::LABEL_COMPONENT: component, super::LABEL_CONTROL_PLANE_NS: l5d, "app.kubernetes.io/name": component, "app.kubernetes.io/part-of": "Linkerd"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {super::LABEL_COMPONENT: component, super::LABEL_CONTROL_PLANE_NS: l5d, "linkerd.io/proxy-deployment": name}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "linkerd.io/created-by": "linkerd/helm edge-sim", "linkerd.io/proxy-version": "edge-sim",
                        super::ANNOTATION_TRUST_ROOT_SHA256: bundle_sha, "linkerd.io/identity-mode": "default",
                    },
                },
                "spec": {
                    "serviceAccountName": name,
                    "containers": [
                        {"name": container, "image": format!("cr.l5d.io/linkerd/controller:edge-sim"), "args": [component]},
                        {
                            "name": super::PROXY_CONTAINER, "image": "cr.l5d.io/linkerd/proxy:edge-sim",
                            "env": [
                                {"name": super::ENV_TRUST_ANCHORS, "valueFrom": {"configMapKeyRef": {"name": super::TRUST_ROOTS_CM, "key": super::TRUST_ROOTS_KEY}}},
                                {"name": super::ENV_LOCAL_NAME, "value": super::proxy::identity_name(name, l5d)},
                            ],
                            "ports": [{"name": "linkerd-admin", "containerPort": super::PROXY_ADMIN_PORT}],
                        },
                    ],
                },
            },
        },
    })
}

fn cert_manager_deployment(component: &str, name: &str) -> Value {
    let app = if component == "controller" {
        "cert-manager"
    } else {
        component
    };
    let labels = json!({
        "app": app, "app.kubernetes.io/name": app, "app.kubernetes.io/instance": "cert-manager",
        "app.kubernetes.io/component": component,
    });
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": super::CERT_MANAGER_NS, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {
                "app.kubernetes.io/name": app, "app.kubernetes.io/instance": "cert-manager",
                "app.kubernetes.io/component": component,
            }},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": name,
                    "containers": [{"name": format!("cert-manager-{component}"), "image": format!("quay.io/jetstack/cert-manager-{component}:v1.19.1")}],
                },
            },
        },
    })
}

fn app_deployment(ns: &str, app: &str, sa: &str, replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app, "namespace": ns, "labels": {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "emojivoto"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app, "version": "v11"}},
                "spec": {"serviceAccountName": sa, "containers": [{"name": app, "image": image}]},
            },
        },
    })
}

fn deployment_done(store: &Store, ns: &str, name: &str) -> bool {
    store
        .get(&deployments(), Some(ns), name)
        .is_some_and(|d| rollout_complete(&d))
}

/// What `kubectl rollout status` waits for.
pub fn rollout_complete(d: &Value) -> bool {
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let s = &d["status"];
    s["observedGeneration"].as_i64() >= d["metadata"]["generation"].as_i64()
        && s["updatedReplicas"].as_i64().unwrap_or(0) == want
        && s["replicas"].as_i64().unwrap_or(0) == want
        && s["availableReplicas"].as_i64().unwrap_or(0) == want
}

/// What keeps the cluster from being converged, for [`super::MeshHandle::converged`].
pub(crate) fn pending(shared: &Shared) -> Vec<String> {
    let mut out = Vec::new();
    if !shared.topology.done.load(Ordering::SeqCst) {
        out.push("creating the topology".to_string());
    }
    if let Some(e) = shared
        .topology
        .error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    {
        out.push(format!("topology failed: {e}"));
    }
    let (certs, _) = shared.store.list(&certificates(), None);
    for c in certs {
        if !condition_true(&c, "Ready") {
            out.push(format!(
                "certificate {}/{} not Ready",
                super::ns_of(&c),
                super::name_of(&c)
            ));
        }
    }
    let (ds, _) = shared.store.list(&deployments(), None);
    let mut n = 0;
    for d in ds {
        if !rollout_complete(&d) {
            n += 1;
            if n <= 5 {
                out.push(format!(
                    "deployment {}/{} not rolled out",
                    super::ns_of(&d),
                    super::name_of(&d)
                ));
            }
        }
    }
    if n > 5 {
        out.push(format!("{} more deployments", n - 5));
    }
    let mut n = 0;
    for s in shared.store.list(&super::statefulsets(), None).0 {
        if !statefulset_rolled_out(&s) {
            n += 1;
            if n <= 5 {
                out.push(format!(
                    "statefulset {}/{} not rolled out",
                    super::ns_of(&s),
                    super::name_of(&s)
                ));
            }
        }
    }
    for d in shared.store.list(&super::daemonsets(), None).0 {
        if !daemonset_rolled_out(&d) {
            n += 1;
            if n <= 5 {
                out.push(format!(
                    "daemonset {}/{} not rolled out",
                    super::ns_of(&d),
                    super::name_of(&d)
                ));
            }
        }
    }
    if n > 5 {
        out.push(format!("{} more statefulsets and daemonsets", n - 5));
    }
    out
}

/// For a convergence timeout: each Deployment that has not rolled out with its status,
/// ReplicaSets and their pods (phase, readiness, deletion, container states), so a hang
/// says where it is stuck.
pub(crate) fn stuck_details(shared: &Shared) -> String {
    use std::fmt::Write;
    let store = &shared.store;
    let (all_rs, _) = store.list(&super::replicasets(), None);
    let (all_pods, _) = store.list(&super::pods(), None);
    let mut out = String::new();
    for d in store.list(&deployments(), None).0.iter().take(20) {
        if rollout_complete(d) {
            continue;
        }
        let _ = writeln!(
            out,
            "deployment {}/{} generation={} replicas={} status={}",
            super::ns_of(d),
            super::name_of(d),
            d["metadata"]["generation"],
            d["spec"]["replicas"],
            d["status"]
        );
        let d_uid = super::workloads::uid(d);
        for rs in all_rs
            .iter()
            .filter(|r| super::workloads::controller_uid(r) == Some(d_uid))
        {
            let _ = writeln!(
                out,
                "  replicaset {} replicas={} status={}",
                super::name_of(rs),
                rs["spec"]["replicas"],
                rs["status"]
            );
            let rs_uid = super::workloads::uid(rs);
            for p in all_pods
                .iter()
                .filter(|p| super::workloads::controller_uid(p) == Some(rs_uid))
            {
                let states: Vec<String> = ["initContainerStatuses", "containerStatuses"]
                    .iter()
                    .filter_map(|k| p["status"][*k].as_array())
                    .flatten()
                    .map(|c| format!("{}: ready={} {}", c["name"], c["ready"], c["state"]))
                    .collect();
                let _ = writeln!(
                    out,
                    "    pod {} rv={} phase={} ready={} deletionTimestamp={} finalizers={} containers=[{}]",
                    super::name_of(p),
                    p["metadata"]["resourceVersion"],
                    p["status"]["phase"],
                    condition_true(p, "Ready"),
                    p["metadata"]["deletionTimestamp"],
                    p["metadata"]["finalizers"],
                    states.join("; ")
                );
            }
        }
    }
    out
}

/// What `kubectl rollout status sts` waits for (RollingUpdate; see its StatusViewer).
pub fn statefulset_rolled_out(s: &Value) -> bool {
    let st = &s["status"];
    let want = s["spec"]["replicas"].as_i64().unwrap_or(1);
    let observed = st["observedGeneration"].as_i64().unwrap_or(0);
    if observed == 0 || s["metadata"]["generation"].as_i64().unwrap_or(1) > observed {
        return false;
    }
    if st["readyReplicas"].as_i64().unwrap_or(0) < want {
        return false;
    }
    let ru = &s["spec"]["updateStrategy"]["rollingUpdate"];
    if let Some(p) = ru["partition"].as_i64() {
        return st["updatedReplicas"].as_i64().unwrap_or(0) >= want - p;
    }
    st["updateRevision"] == st["currentRevision"]
}

/// What `kubectl rollout status ds` waits for.
pub fn daemonset_rolled_out(d: &Value) -> bool {
    let st = &d["status"];
    let desired = st["desiredNumberScheduled"].as_i64().unwrap_or(0);
    d["metadata"]["generation"].as_i64().unwrap_or(1)
        <= st["observedGeneration"].as_i64().unwrap_or(0)
        && st["updatedNumberScheduled"].as_i64().unwrap_or(0) >= desired
        && st["numberAvailable"].as_i64().unwrap_or(0) >= desired
}

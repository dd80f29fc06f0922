//! Shared harness of the operator's end-to-end tests on the cluster simulator: start the demo
//! topology, install the CRD and the `cluster` rotation, run the real operator binary, and
//! drive the user guide's manual steps the way `cmctl` and `kubectl` do.

#![allow(dead_code)]

pub mod recorder;

use cluster_sim::{Durations, Sim, SimConfig, Topology};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use trust_rotation_crds::{
    Phase, TrustAnchorRotation, TrustAnchorRotationSpec, TrustAnchorRotationStatus,
};

pub const APP_NS: &str = "emojivoto";

pub async fn start_sim() -> Sim {
    start_sim_with(0).await
}

/// The demo topology plus `extra_pods` meshed pods across many namespaces.
pub async fn start_sim_with(extra_pods: usize) -> Sim {
    start_topology(Topology::Demo, extra_pods).await
}

/// `topology` plus `extra_pods`, with the CRD and the rotation installed.
async fn start_topology(topology: Topology, extra_pods: usize) -> Sim {
    let sim = Sim::start(SimConfig {
        topology,
        pods: extra_pods,
        // Fast, but workload certificates live long enough that they move onto the new
        // issuer only when the guide's restart asks them to (so every phase is observable).
        durations: Durations {
            workload_cert_lifetime: Duration::from_secs(600),
            ..Durations::fast()
        },
        ..Default::default()
    })
    .await
    .expect("the simulator starts");
    install_rotation(&sim.client()).await;
    sim
}

/// Merge-patches the spec of the TrustAnchorRotation `cluster`, as `kubectl patch --type merge`.
pub async fn patch_spec(client: &kube::Client, spec: serde_json::Value) {
    Api::<TrustAnchorRotation>::all(client.clone())
        .patch(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("spec patched");
}

/// What the chart does: the CRD, the `cluster` rotation with the defaults, and the empty
/// previous-anchor Secret (the operator may update it, not create it).
pub async fn install_rotation(client: &kube::Client) {
    let crd: CustomResourceDefinition = {
        use kube::CustomResourceExt;
        TrustAnchorRotation::crd()
    };
    install_crd(client, &crd).await;
    create_rotation(client, "cluster").await;
    create_previous_anchor_secret(client).await;
}

/// The chart's empty `Opaque` previous-anchor Secret.
pub async fn create_previous_anchor_secret(client: &kube::Client) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("linkerd-previous-anchor".into()),
            namespace: Some("cert-manager".into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), "cert-manager")
        .create(&PostParams::default(), &secret)
        .await
        .expect("the previous-anchor Secret is created");
}

pub async fn install_crd(client: &kube::Client, crd: &CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), crd)
        .await
        .expect("the CRD installs");
}

/// Creates a TrustAnchorRotation with the defaults (retrying while its kind is not served).
pub async fn create_rotation(client: &kube::Client, name: &str) {
    let tars: Api<TrustAnchorRotation> = Api::all(client.clone());
    for _ in 0..50 {
        let tar = TrustAnchorRotation::new(name, TrustAnchorRotationSpec::default());
        match tars.create(&PostParams::default(), &tar).await {
            Ok(_) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("could not create the TrustAnchorRotation {name}");
}

/// The `demo-all-kinds` topology (three Nodes; a StatefulSet with a PDB, a DaemonSet and a
/// CronJob in `emojivoto`), with the CRD and the rotation installed.
pub async fn start_all_kinds_sim() -> Sim {
    start_topology(Topology::DemoAllKinds, 0).await
}

/// The demo topology with no CRD installed yet.
pub async fn start_bare_sim() -> Sim {
    Sim::start(SimConfig {
        topology: Topology::Demo,
        durations: Durations {
            workload_cert_lifetime: Duration::from_secs(600),
            ..Durations::fast()
        },
        ..Default::default()
    })
    .await
    .expect("the simulator starts")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("bound").port()
}

/// The real operator binary as a child process.
pub struct Operator {
    pub child: Child,
    pub admin: SocketAddr,
}

impl Operator {
    pub fn spawn(kubeconfig: &Path, env: &[(&str, String)]) -> Operator {
        Self::spawn_with(kubeconfig, env, &[])
    }

    /// With `flags` (`--name value`) replacing the tests' defaults.
    pub fn spawn_with(
        kubeconfig: &Path,
        env: &[(&str, String)],
        flags: &[(&str, &str)],
    ) -> Operator {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trust-rotation-operator"));
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--admin-addr")
            .arg(admin.to_string());
        let defaults = [
            ("--lease-duration", "2s"),
            ("--resync-interval", "2s"),
            ("--probe-timeout", "2s"),
            ("--log-level", "info,kube=warn"),
        ];
        for (flag, value) in defaults {
            let value = flags
                .iter()
                .find(|(f, _)| *f == flag)
                .map_or(value, |(_, v)| *v);
            cmd.args([flag, value]);
        }
        for (flag, value) in flags {
            if !defaults.iter().any(|(f, _)| f == flag) {
                cmd.args([*flag, *value]);
            }
        }
        cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the operator binary starts");
        Operator { child, admin }
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`...) to the process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("the operator runs");
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// SIGKILL: no chance to clean up, as when a node dies.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the operator exits after SIGTERM")
            .expect("wait")
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = tokio::net::TcpStream::connect(self.admin).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Some((200, _)) = self.get("/ready").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the operator never became ready");
    }
}

/// The value of one metric sample line (`name{labels} value`), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

pub async fn status(client: &kube::Client) -> TrustAnchorRotationStatus {
    Api::<TrustAnchorRotation>::all(client.clone())
        .get("cluster")
        .await
        .expect("the rotation exists")
        .status
        .unwrap_or_default()
}

/// Waits until `pred` holds for the rotation's status.
pub async fn wait_status(
    client: &kube::Client,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&TrustAnchorRotationStatus) -> bool,
) -> TrustAnchorRotationStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let s = status(client).await;
        if pred(&s) {
            return s;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; phase {:?}, step {:?}, blocking {:?}, steps {:#?}",
                s.phase, s.current_step, s.blocking_message, s.steps
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_phase(
    client: &kube::Client,
    phase: Phase,
    step: &str,
    timeout: Duration,
) -> TrustAnchorRotationStatus {
    wait_status(
        client,
        &format!("phase {phase} / step {step}"),
        timeout,
        |s| s.phase == Some(phase) && s.current_step.as_deref() == Some(step),
    )
    .await
}

/// Every distinct phase the rotation's status went through, in order, from a watch.
pub fn record_phases(client: &kube::Client) -> Arc<Mutex<Vec<Phase>>> {
    let seen: Arc<Mutex<Vec<Phase>>> = Arc::default();
    let out = seen.clone();
    let api: Api<TrustAnchorRotation> = Api::all(client.clone());
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(tar)) = stream.next().await {
            if let Some(p) = tar.status.and_then(|s| s.phase) {
                let mut v = out.lock().unwrap();
                if v.last() != Some(&p) {
                    v.push(p);
                }
            }
        }
    });
    seen
}

pub fn certificate_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// What `cmctl renew` does: condition Issuing=True through the status subresource.
pub async fn cmctl_renew(client: &kube::Client, ns: &str, name: &str) {
    let api = certificate_api(client, ns);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let cert = api.get(name).await.expect("the Certificate exists");
    let mut conditions: Vec<serde_json::Value> = cert.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != "Issuing")
        .collect();
    conditions.push(serde_json::json!({
        "type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
        "message": "Certificate re-issuance manually triggered", "lastTransitionTime": now,
    }));
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"conditions": conditions}})),
    )
    .await
    .expect("renewal triggered");
}

/// What `kubectl -n <ns> rollout restart deploy` does.
pub async fn rollout_restart(client: &kube::Client, ns: &str) {
    restart_every::<Deployment>(client, ns).await;
}

/// What `kubectl -n <ns> rollout restart deploy/NAME`, `sts/NAME` or `ds/NAME` does: the
/// template annotation `kubectl.kubernetes.io/restartedAt`.
pub async fn rollout_restart_one<K>(client: &kube::Client, ns: &str, name: &str)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.fZ")
        .to_string();
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}});
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams {
                field_manager: Some("kubectl-rollout".into()),
                ..Default::default()
            },
            &Patch::Strategic(&patch),
        )
        .await
        .expect("restart");
}

/// `kubectl rollout restart` of every object of kind `K` in `ns`, one by one.
async fn restart_every<K>(client: &kube::Client, ns: &str)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    for o in api.list(&ListParams::default()).await.expect("list").items {
        let name = o.meta().name.clone().unwrap_or_default();
        rollout_restart_one::<K>(client, ns, &name).await;
    }
}

/// What a person does for each workload of `ns` with its own command:
/// `kubectl rollout restart deploy/NAME`, `sts/NAME`, `ds/NAME`.
pub async fn rollout_restart_all_kinds(client: &kube::Client, ns: &str) {
    restart_every::<Deployment>(client, ns).await;
    restart_every::<StatefulSet>(client, ns).await;
    restart_every::<DaemonSet>(client, ns).await;
}

/// A bare meshed pod (no owner) in the application namespace, injected like `web`'s pods:
/// `kubectl rollout restart` never replaces it.
pub async fn create_bare_meshed_pod(client: &kube::Client, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), APP_NS);
    let template = api
        .list(&ListParams::default().labels("linkerd.io/proxy-deployment=web"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .next()
        .expect("a meshed pod to copy");
    let mut labels = template.metadata.labels.clone().unwrap_or_default();
    labels.retain(|k, _| !k.starts_with("linkerd.io/proxy-") && k != "pod-template-hash");
    let mut spec = template.spec.clone().unwrap_or_default();
    // A new pod: the scheduler places it (the template's Node binding is not copied).
    spec.node_name = None;
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(APP_NS.into()),
            labels: Some(labels),
            annotations: template.metadata.annotations.clone(),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    api.create(&PostParams::default(), &pod)
        .await
        .expect("bare pod created");
}

/// The guide's steps 3 and 4 from WaitingForIdentityRotation: renew the issuer, restart the
/// data plane twice (every Deployment, StatefulSet and DaemonSet of `emojivoto`), and wait for Synced. Returns the final status.
pub async fn finish_from_identity_rotation(
    client: &kube::Client,
    timeout: Duration,
) -> TrustAnchorRotationStatus {
    cmctl_renew(client, "linkerd", "linkerd-identity-issuer").await;
    wait_phase(
        client,
        Phase::RenewingWorkloadCerts,
        "AccelerateRefresh",
        timeout,
    )
    .await;
    rollout_restart_all_kinds(client, APP_NS).await;
    wait_phase(
        client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        timeout,
    )
    .await;
    rollout_restart_all_kinds(client, APP_NS).await;
    wait_status(client, "Synced", timeout, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await
}

/// The anchor Secret's fingerprint once it differs from `old` (cert-manager renewed it).
pub async fn renewed_anchor(client: &kube::Client, old: &str) -> String {
    for _ in 0..600 {
        let now = secret_cert_fingerprint(client, "cert-manager", "linkerd-trust-anchor").await;
        if now != old {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the trust anchor was never renewed");
}

pub async fn secret_cert_fingerprint(client: &kube::Client, ns: &str, name: &str) -> String {
    // The test reads as a person would: a failed read (injected faults) is simply repeated.
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let mut tries = 0;
    let s = loop {
        match api.get(name).await {
            Ok(s) => break s,
            Err(e) if tries < 20 => {
                tries += 1;
                eprintln!("reading Secret {ns}/{name} failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("secret {ns}/{name}: {e}"),
        }
    };
    let pem = String::from_utf8(s.data.expect("data")["tls.crt"].0.clone()).expect("utf8");
    trust_rotation_steps::pki::parse_pem_certificate(&pem)
        .expect("cert")
        .fingerprint()
        .to_string()
}

pub async fn bundle_fingerprints(client: &kube::Client) -> Vec<String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "linkerd")
        .get("linkerd-identity-trust-roots")
        .await
        .expect("bundle");
    let value = cm.data.expect("data")["ca-bundle.crt"].clone();
    trust_rotation_steps::bundle::Bundle::parse(&value)
        .expect("bundle parses")
        .fingerprints()
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Meshed pods outside the control plane (what the bundle counts target).
pub async fn workload_pods(client: &kube::Client) -> usize {
    Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels("linkerd.io/control-plane-ns=linkerd"))
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.metadata.namespace.as_deref() != Some("linkerd"))
        .count()
}

/// Namespaces with meshed workloads.
pub async fn workload_namespaces(client: &kube::Client) -> Vec<String> {
    let mut ns: Vec<String> = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels("linkerd.io/control-plane-ns=linkerd"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.namespace)
        .filter(|n| n != "linkerd")
        .collect();
    ns.sort();
    ns.dedup();
    ns
}

/// `kubectl rollout restart deploy` in every namespace with meshed workloads.
pub async fn restart_data_plane(client: &kube::Client, namespaces: &[String]) {
    for ns in namespaces {
        rollout_restart(client, ns).await;
    }
}

pub async fn deployment_generation(client: &kube::Client, ns: &str, name: &str) -> i64 {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("deployment")
        .metadata
        .generation
        .unwrap_or(0)
}

/// The operator's Lease.
pub async fn operator_lease(
    client: &kube::Client,
) -> Option<k8s_openapi::api::coordination::v1::Lease> {
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), "linkerd")
        .get_opt("trust-rotation-operator")
        .await
        .ok()
        .flatten()
}

/// Who holds the operator's Lease, if anyone.
pub async fn lease_holder(client: &kube::Client) -> Option<String> {
    operator_lease(client)
        .await
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Waits (up to 2 min) until a replica whose identity starts with `prefix` holds the Lease;
/// returns when it was seen.
pub async fn wait_holder(client: &kube::Client, prefix: &str) -> std::time::Instant {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if lease_holder(client)
            .await
            .is_some_and(|h| h.starts_with(prefix))
        {
            return std::time::Instant::now();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{prefix} never took the Lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const CONTROL_PLANE: [&str; 3] = [
    "linkerd-proxy-injector",
    "linkerd-identity",
    "linkerd-destination",
];

// === automation ===

/// What `linkerd trust approve <step>` writes (the same function builds the value).
pub async fn approve(client: &kube::Client, gate: trust_rotation_crds::ApprovalGate, id: &str) {
    let api = Api::<TrustAnchorRotation>::all(client.clone());
    let tar = api.get("cluster").await.expect("rotation");
    use trust_rotation_steps::rotation::approval;
    let existing = approval::Annotation::of(&tar.metadata).value;
    let value = approval::approve(existing.as_deref(), gate, id);
    api.patch(
        "cluster",
        &PatchParams {
            field_manager: Some("linkerd-trust".into()),
            ..Default::default()
        },
        &Patch::Merge(
            serde_json::json!({"metadata": {"annotations": {approval::ANNOTATION: value}}}),
        ),
    )
    .await
    .expect("annotated");
}

/// The events.k8s.io Events about the rotation, in the order they were recorded.
pub async fn rotation_events(client: &kube::Client) -> Vec<k8s_openapi::api::events::v1::Event> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let mut evs: Vec<_> = api
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("TrustAnchorRotation")
        })
        .collect();
    // By the time the recorder gave each (microseconds): resourceVersions are opaque to
    // clients on a real API server.
    evs.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    evs
}

/// Reasons of the Events recorded about the rotation, oldest first.
pub async fn event_reasons(client: &kube::Client) -> Vec<String> {
    rotation_events(client)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// Notes of the Events about the rotation with this reason, oldest first.
pub async fn event_notes(client: &kube::Client, reason: &str) -> Vec<String> {
    rotation_events(client)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

/// The simulator's mTLS oracle never saw a failed connection.
pub fn assert_mtls_intact(sim: &cluster_sim::Sim) {
    let report = sim.oracle().report();
    assert!(
        report.min_ratio >= 1.0,
        "mTLS never degraded: min ratio {} over {} samples, low intervals {:?}",
        report.min_ratio,
        report.samples,
        report.intervals
    );
}

/// Where Debian's `faketime` package puts libfaketime (`make test` installs it).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The operator's wall clock, moved by libfaketime: `env()` goes to the operator process,
/// `set("+4h")` moves its clock (re-read at every call, `FAKETIME_NO_CACHE`). Monotonic
/// clocks (tokio's timers) are left alone. Only forward of the real time: the simulator's
/// certificates start at the real now.
pub struct FakeClock {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl FakeClock {
    pub fn new(offset: &str) -> Self {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: install Debian's faketime package (make test does)"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let clock = Self {
            path: dir.path().join("faketime"),
            _dir: dir,
        };
        clock.set(offset);
        clock
    }

    /// Moves the clock to `offset` from the real time (`+0`, `+2h`), atomically.
    pub fn set(&self, offset: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset}\n")).expect("faketime file written");
        std::fs::rename(&tmp, &self.path).expect("faketime file renamed");
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", LIBFAKETIME.to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE",
                self.path.to_string_lossy().into_owned(),
            ),
            ("FAKETIME_NO_CACHE", "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ]
    }
}

/// The demo topology with workload certificates that live a day, for tests that move the
/// operator's clock hours ahead (its probes check the certificates' validity at its time).
pub async fn start_sim_with_day_long_certs() -> Sim {
    let sim = Sim::start(SimConfig {
        topology: Topology::Demo,
        durations: Durations {
            workload_cert_lifetime: Duration::from_secs(24 * 3600),
            ..Durations::fast()
        },
        ..Default::default()
    })
    .await
    .expect("the simulator starts");
    install_rotation(&sim.client()).await;
    sim
}

// === the walkthrough ===

/// The operator process(es) of a test; a killer may replace the current one at any time.
pub struct Ops {
    pub kubeconfig: std::path::PathBuf,
    pub env: Vec<(&'static str, String)>,
    pub current: tokio::sync::Mutex<Option<Operator>>,
}

impl Ops {
    pub fn new(kubeconfig: &Path, env: Vec<(&'static str, String)>) -> Arc<Ops> {
        Arc::new(Ops {
            kubeconfig: kubeconfig.to_path_buf(),
            env,
            current: tokio::sync::Mutex::new(None),
        })
    }

    pub async fn start(&self) {
        let op = Operator::spawn(&self.kubeconfig, &self.env);
        op.wait_ready().await;
        *self.current.lock().await = Some(op);
    }

    /// Replaces the running operator with a fresh process (SIGKILL first).
    pub async fn kill_and_restart(&self) {
        let mut cur = self.current.lock().await;
        if let Some(op) = cur.take() {
            op.kill().await;
        }
        let op = Operator::spawn(&self.kubeconfig, &self.env);
        *cur = Some(op);
    }

    pub async fn metrics(&self) -> String {
        match self.current.lock().await.as_ref() {
            Some(op) => op.metrics().await,
            None => String::new(),
        }
    }

    /// Waits until the metric has `want` (the operator may just have restarted).
    pub async fn expect_metric(&self, series: &str, want: f64) {
        let mut last = String::new();
        for _ in 0..100 {
            last = self.metrics().await;
            if metric(&last, series) == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("metric {series} never became {want}; last scrape:\n{last}");
    }

    pub async fn stop(&self) {
        if let Some(op) = self.current.lock().await.take() {
            let status = op.terminate().await;
            assert!(
                status.success(),
                "the operator exits cleanly on SIGTERM: {status:?}"
            );
        }
    }
}

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The user guide's rotation, checking the phase, the status and the guide's metrics at
/// every stage. Returns the anchors (old, new).
pub async fn walkthrough(sim: &Sim, ops: &Ops) -> (String, String) {
    let client = sim.client();
    let phases = record_phases(&client);
    let n = workload_pods(&client).await as f64;
    let app_namespaces = workload_namespaces(&client).await;
    assert!(n >= 4.0, "the demo topology meshes emojivoto");
    let gens_before = futures::future::join_all(
        CONTROL_PLANE
            .iter()
            .map(|d| deployment_generation(&client, "linkerd", d)),
    )
    .await;

    // Synced, with the guide's metrics.
    let s = wait_status(&client, "Synced", STEP_TIMEOUT, |s| {
        s.phase == Some(Phase::Synced) && s.trust_bundle.is_some()
    })
    .await;
    let old_anchor = secret_cert_fingerprint(&client, "cert-manager", "linkerd-trust-anchor").await;
    let old_issuer = secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await;
    assert_eq!(
        s.active_anchor.as_ref().map(|c| c.fingerprint.as_str()),
        Some(old_anchor.as_str())
    );
    assert_eq!(
        bundle_fingerprints(&client).await,
        std::slice::from_ref(&old_anchor)
    );
    ops.expect_metric("trust_rotation_phase{phase=\"Synced\"}", 1.0)
        .await;
    ops.expect_metric("trust_rotation_trust_bundle_target_pods", n)
        .await;
    ops.expect_metric("trust_rotation_trust_bundle_converged_pods", n)
        .await;
    ops.expect_metric(
        &format!("trust_rotation_active_issuer_info{{fingerprint=\"{old_issuer}\"}}"),
        1.0,
    )
    .await;
    ops.expect_metric(
        "trust_rotation_workload_certificate_refresh_interval_seconds",
        0.0,
    )
    .await;
    sim.oracle().reset();

    // Step 1: trigger trust-root renewal.
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let s = wait_phase(
        &client,
        Phase::PropagatingTrustRoots,
        "AwaitPropagation",
        STEP_TIMEOUT,
    )
    .await;
    let new_anchor = secret_cert_fingerprint(&client, "cert-manager", "linkerd-trust-anchor").await;
    assert_ne!(new_anchor, old_anchor);
    let rotation = s.rotation.clone().expect("a rotation is recorded");
    assert_eq!(rotation.from_anchor.as_deref(), Some(old_anchor.as_str()));
    assert_eq!(rotation.to_anchor.as_deref(), Some(new_anchor.as_str()));
    assert!(rotation
        .trace_parent
        .as_deref()
        .is_some_and(|t| t.contains(&rotation.id)));
    assert_eq!(
        bundle_fingerprints(&client).await,
        [old_anchor.clone(), new_anchor.clone()],
        "old + new, old first"
    );
    assert_eq!(
        secret_cert_fingerprint(&client, "cert-manager", "linkerd-previous-anchor").await,
        old_anchor
    );
    ops.expect_metric("trust_rotation_phase{phase=\"PropagatingTrustRoots\"}", 1.0)
        .await;
    ops.expect_metric("trust_rotation_phase{phase=\"Synced\"}", 0.0)
        .await;
    ops.expect_metric("trust_rotation_trust_bundle_target_pods", n)
        .await;
    ops.expect_metric("trust_rotation_trust_bundle_converged_pods", 0.0)
        .await;
    ops.expect_metric(
        &format!("trust_rotation_previous_anchor_info{{fingerprint=\"{old_anchor}\"}}"),
        1.0,
    )
    .await;
    for d in CONTROL_PLANE {
        let g = deployment_generation(&client, "linkerd", d).await;
        let i = CONTROL_PLANE.iter().position(|x| *x == d).unwrap_or(0);
        assert_eq!(
            g,
            gens_before[i] + 1,
            "{d} restarted exactly once onto the expanded bundle"
        );
    }

    // Step 2: restart the data plane.
    restart_data_plane(&client, &app_namespaces).await;
    let s = wait_status(
        &client,
        "WaitingForIdentityRotation naming the awaited step",
        STEP_TIMEOUT,
        |s| {
            s.phase == Some(Phase::WaitingForIdentityRotation)
                && s.current_step.as_deref() == Some("AwaitIssuer")
                && s.steps
                    .iter()
                    // (Not a passing error's "retrying" message: the one a person acts on.)
                    .any(|r| {
                        r.name == "AwaitIssuer"
                            && r.message
                                .as_deref()
                                .is_some_and(|m| m.contains("cmctl renew"))
                    })
        },
    )
    .await;
    let tb = s.trust_bundle.clone().expect("bundle counts");
    assert_eq!((tb.converged as f64, tb.target as f64), (n, n));
    let awaiting = s
        .steps
        .iter()
        .find(|r| r.name == "AwaitIssuer")
        .and_then(|r| r.message.clone())
        .unwrap_or_default();
    assert!(
        awaiting.contains("cmctl renew -n linkerd linkerd-identity-issuer"),
        "{awaiting}"
    );
    ops.expect_metric(
        "trust_rotation_phase{phase=\"WaitingForIdentityRotation\"}",
        1.0,
    )
    .await;
    ops.expect_metric("trust_rotation_trust_bundle_converged_pods", n)
        .await;

    // Step 3: trigger identity-issuer renewal.
    cmctl_renew(&client, "linkerd", "linkerd-identity-issuer").await;
    let s = wait_status(
        &client,
        "RenewingWorkloadCerts with the interval published",
        STEP_TIMEOUT,
        |s| {
            s.phase == Some(Phase::RenewingWorkloadCerts)
                && s.current_step.as_deref() == Some("AccelerateRefresh")
                && s.workload_certificate_refresh_interval.is_some()
        },
    )
    .await;
    let new_issuer = secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await;
    assert_ne!(new_issuer, old_issuer);
    assert_eq!(
        s.workload_certificate_refresh_interval.as_deref(),
        Some("5m")
    );
    ops.expect_metric("trust_rotation_phase{phase=\"RenewingWorkloadCerts\"}", 1.0)
        .await;
    ops.expect_metric(
        "trust_rotation_workload_certificate_refresh_interval_seconds",
        300.0,
    )
    .await;
    ops.expect_metric(
        &format!("trust_rotation_active_issuer_info{{fingerprint=\"{new_issuer}\"}}"),
        1.0,
    )
    .await;
    ops.expect_metric("trust_rotation_workload_certificates_target_pods", n)
        .await;
    // Without a data plane operator: restart so proxies get certificates from the new issuer.
    restart_data_plane(&client, &app_namespaces).await;

    // Step 4: bundle reduction, then the final restart.
    let s = wait_phase(
        &client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        STEP_TIMEOUT,
    )
    .await;
    let wc = s.workload_certificates.clone().expect("certificate counts");
    assert_eq!((wc.converged as f64, wc.target as f64), (n, n));
    assert_eq!(
        s.workload_certificate_refresh_interval, None,
        "the interval is cleared once certificates converged"
    );
    assert_eq!(
        bundle_fingerprints(&client).await,
        std::slice::from_ref(&new_anchor)
    );
    assert_eq!(
        secret_cert_fingerprint(&client, "cert-manager", "linkerd-previous-anchor").await,
        new_anchor
    );
    ops.expect_metric("trust_rotation_phase{phase=\"RemovingOldTrustRoots\"}", 1.0)
        .await;
    ops.expect_metric(
        "trust_rotation_workload_certificate_refresh_interval_seconds",
        0.0,
    )
    .await;
    ops.expect_metric("trust_rotation_workload_certificates_converged_pods", n)
        .await;
    ops.expect_metric(
        &format!("trust_rotation_previous_anchor_info{{fingerprint=\"{new_anchor}\"}}"),
        1.0,
    )
    .await;
    restart_data_plane(&client, &app_namespaces).await;

    let s = wait_status(&client, "Synced after the rotation", STEP_TIMEOUT, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none() && !s.history.is_empty()
    })
    .await;
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].id, rotation.id);
    assert_eq!(
        s.history[0].trace_parent, rotation.trace_parent,
        "one trace for the whole rotation"
    );
    assert!(s.steps.is_empty() && s.current_step.is_none() && s.blocking_message.is_none());
    assert_eq!(
        bundle_fingerprints(&client).await,
        std::slice::from_ref(&new_anchor)
    );
    assert_eq!(
        secret_cert_fingerprint(&client, "cert-manager", "linkerd-previous-anchor").await,
        new_anchor
    );
    ops.expect_metric("trust_rotation_phase{phase=\"Synced\"}", 1.0)
        .await;
    ops.expect_metric("trust_rotation_trust_bundle_converged_pods", n)
        .await;
    for (i, d) in CONTROL_PLANE.iter().enumerate() {
        assert_eq!(
            deployment_generation(&client, "linkerd", d).await,
            gens_before[i] + 3,
            "{d} restarted exactly once per RollControlPlane step"
        );
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        phases.lock().unwrap().clone(),
        [
            Phase::Synced,
            Phase::RefreshingControlPlane,
            Phase::PropagatingTrustRoots,
            Phase::WaitingForIdentityRotation,
            Phase::RenewingWorkloadCerts,
            Phase::RefreshingControlPlane,
            Phase::RemovingOldTrustRoots,
            Phase::Synced,
        ],
        "the guide's phase sequence"
    );
    let report = sim.oracle().report();
    assert!(
        report.min_ratio >= 1.0,
        "mTLS never degraded during the rotation: min ratio {} over {} samples, low intervals {:?}",
        report.min_ratio,
        report.samples,
        report.intervals
    );
    (old_anchor, new_anchor)
}

//! A rotation driven by the real operator, run in the test's process, on the simulator's demo
//! topology: what the CLI tests that follow a whole rotation share.

#![allow(dead_code)]

use clap::Parser;
use cluster_sim::mesh::{Durations, Topology};
use cluster_sim::{Sim, SimConfig};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::CustomResourceExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trust_rotation_crds::{
    Phase, TrustAnchorRotation, TrustAnchorRotationSpec, TrustAnchorRotationStatus,
};

pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The simulator, its kubeconfig, and the operator's task (abort it when done).
pub struct Rotating {
    pub sim: Sim,
    pub kubeconfig: PathBuf,
    pub operator: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The demo topology with the chart's CRD and `cluster` TrustAnchorRotation, and the operator
/// running. Workload certificates outlive the test: pods move to the new issuer only when
/// restarted, so every phase waits for the person.
pub async fn start() -> Rotating {
    start_with(Topology::Demo, false).await
}

/// [`start`] on `topology`; with `previous_anchor_secret`, also the empty previous-anchor
/// Secret the chart creates.
pub async fn start_with(topology: Topology, previous_anchor_secret: bool) -> Rotating {
    let sim = Sim::start(SimConfig {
        topology,
        durations: Durations {
            workload_cert_lifetime: Duration::from_secs(600),
            ..Durations::fast()
        },
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts");
    let client = sim.client();
    let kubeconfig = sim.kubeconfig_path().to_path_buf();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &TrustAnchorRotation::crd())
        .await
        .expect("CRD");
    let tars: Api<TrustAnchorRotation> = Api::all(client.clone());
    let mut created = false;
    for _ in 0..50 {
        // The CRD is served shortly after it is created.
        let tar = TrustAnchorRotation::new("cluster", TrustAnchorRotationSpec::default());
        if tars.create(&PostParams::default(), &tar).await.is_ok() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "TrustAnchorRotation cluster could not be created");
    if previous_anchor_secret {
        let previous: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "linkerd-previous-anchor", "namespace": "cert-manager"},
        }))
        .expect("a Secret");
        Api::<Secret>::namespaced(client.clone(), "cert-manager")
            .create(&PostParams::default(), &previous)
            .await
            .expect("previous-anchor Secret");
    }
    let args = trust_rotation_operator::args::Args::parse_from([
        "trust-rotation-operator",
        "--kubeconfig",
        kubeconfig.to_str().expect("UTF-8 path"),
        "--admin-addr",
        "127.0.0.1:0",
        "--leader-election",
        "false",
        "--resync-interval",
        "1s",
        "--probe-timeout",
        "2s",
        "--log-level",
        "warn",
    ]);
    let operator = tokio::spawn(trust_rotation_operator::run(args));
    Rotating {
        sim,
        kubeconfig,
        operator,
    }
}

/// What `linkerd-trust` printed and exited with.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real `linkerd-trust` binary against `kubeconfig`.
pub async fn cli(kubeconfig: &Path, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_linkerd-trust"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .expect("run linkerd-trust");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits up to `timeout` for the rotation's status to satisfy `pred`.
pub async fn wait_status(
    client: &kube::Client,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&TrustAnchorRotationStatus) -> bool,
) -> TrustAnchorRotationStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let s = status(client).await.unwrap_or_default();
        if pred(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened; status: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn status(client: &kube::Client) -> Option<TrustAnchorRotationStatus> {
    Api::<TrustAnchorRotation>::all(client.clone())
        .get("cluster")
        .await
        .ok()
        .and_then(|t| t.status)
}

pub async fn wait_phase(client: &kube::Client, phase: Phase) {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let s = status(client).await;
        if s.as_ref().and_then(|s| s.phase) == Some(phase) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "phase {phase} not reached; status: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kubectl -n emojivoto rollout restart deploy`, as the guide has the user run it. kubectl
/// stamps the restart with a one-second timestamp and refuses a second restart within the same
/// second (asking to wait), which the fast simulated rotation can reach; then wait, as a user
/// would, and retry.
pub async fn restart_app(kubeconfig: &Path) {
    for _ in 0..5 {
        let out = tokio::process::Command::new("kubectl")
            .args(["-n", "emojivoto", "rollout", "restart", "deploy"])
            .env("KUBECONFIG", kubeconfig)
            .output()
            .await
            .expect("run kubectl");
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("within the past second"), "{stderr}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    panic!("kubectl rollout restart kept refusing");
}

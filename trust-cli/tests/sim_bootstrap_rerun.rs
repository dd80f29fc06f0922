//! The reproduction, through the real binaries: in every phase of a rotation driven by
//! the real operator, re-running the README's bootstrap (`linkerd trust bundle | kubectl apply
//! -f -`, as a person or a GitOps tool re-applying its output would) changes no root, so the
//! guide's restarts that follow keep mTLS, and the rotation completes.

mod rotating;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use rotating::{restart_app, status, wait_phase};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use trust_rotation_crds::Phase;

const BIN: &str = env!("CARGO_BIN_EXE_linkerd-trust");

async fn roots(client: &kube::Client) -> Vec<String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "linkerd")
        .get("linkerd-identity-trust-roots")
        .await
        .expect("trust roots");
    let pem = cm
        .data
        .and_then(|mut d| d.remove("ca-bundle.crt"))
        .unwrap_or_default();
    trust_rotation_steps::pki::parse_pem_certificates(&pem)
        .expect("a PEM bundle")
        .iter()
        .map(|c| c.fingerprint().to_string())
        .collect()
}

/// `linkerd trust bundle | kubectl apply -f -`, each side checked.
fn rerun_bootstrap(kubeconfig: &Path) -> String {
    let out = Command::new(BIN)
        .arg("bundle")
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run linkerd-trust");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "linkerd trust bundle: {stderr}");
    let mut apply = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    apply
        .stdin
        .take()
        .expect("stdin")
        .write_all(&out.stdout)
        .expect("pipe the manifest");
    let applied = apply.wait_with_output().expect("kubectl apply");
    assert!(
        applied.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    stderr
}

/// Re-runs the bootstrap and asserts it changed no root and blocked nothing.
async fn rerun_changes_nothing(client: &kube::Client, kubeconfig: &Path, phase: Phase) {
    let before = roots(client).await;
    let stderr = rerun_bootstrap(kubeconfig);
    assert_eq!(
        roots(client).await,
        before,
        "re-running the bootstrap in {phase} changed the bundle ({stderr})"
    );
    let s = status(client).await.expect("status");
    assert_eq!(s.blocking_message, None, "in {phase}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_the_bootstrap_in_every_phase_changes_no_root() {
    let rotating::Rotating {
        sim,
        kubeconfig: kc,
        operator,
    } = rotating::start().await;
    let client = sim.client();
    wait_phase(&client, Phase::Synced).await;
    let old = roots(&client).await;
    assert_eq!(old.len(), 1);
    sim.oracle().reset();

    let renewed = Command::new(BIN)
        .args(["renew", "anchor"])
        .env("KUBECONFIG", &kc)
        .output()
        .expect("renew anchor");
    assert!(
        renewed.status.success(),
        "{}",
        String::from_utf8_lossy(&renewed.stderr)
    );
    wait_phase(&client, Phase::PropagatingTrustRoots).await;
    let expanded = roots(&client).await;
    assert_eq!(expanded.len(), 2, "old and new roots");
    let stderr = rerun_bootstrap(&kc);
    assert!(
        stderr.contains("a rotation is in progress: PropagatingTrustRoots"),
        "{stderr}"
    );
    assert_eq!(roots(&client).await, expanded);

    restart_app(&kc).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation).await;
    rerun_changes_nothing(&client, &kc, Phase::WaitingForIdentityRotation).await;

    let renewed = Command::new(BIN)
        .args(["renew", "issuer"])
        .env("KUBECONFIG", &kc)
        .output()
        .expect("renew issuer");
    assert!(
        renewed.status.success(),
        "{}",
        String::from_utf8_lossy(&renewed.stderr)
    );
    wait_phase(&client, Phase::RenewingWorkloadCerts).await;
    rerun_changes_nothing(&client, &kc, Phase::RenewingWorkloadCerts).await;

    restart_app(&kc).await;
    wait_phase(&client, Phase::RemovingOldTrustRoots).await;
    let reduced = roots(&client).await;
    assert_eq!(reduced.len(), 1, "the new root only");
    assert_ne!(reduced, old);
    rerun_changes_nothing(&client, &kc, Phase::RemovingOldTrustRoots).await;

    restart_app(&kc).await;
    wait_phase(&client, Phase::Synced).await;
    rerun_changes_nothing(&client, &kc, Phase::Synced).await;
    assert_eq!(roots(&client).await, reduced);
    assert!(
        sim.oracle().min_ratio() >= 1.0,
        "mTLS intact: {:?}",
        sim.oracle().report().intervals
    );
    operator.abort();
    sim.shutdown().await;
}

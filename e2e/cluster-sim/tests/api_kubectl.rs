//! Runs `tests/kubectl.sh` (real kubectl) against an in-process simulator.

use cluster_sim::{Sim, SimConfig};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_script_passes() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED kubectl_script_passes: kubectl is not installed (install kubectl to run tests/kubectl.sh)");
        return;
    }
    let sim = Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("starting the simulator: {e:#}"));
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let manifest = env!("CARGO_MANIFEST_DIR");
    let script = format!("{manifest}/tests/kubectl.sh");
    let crd = format!("{manifest}/../../crds/trust.linkerd.io_trustanchorrotations.yaml");
    let kubeconfig = sim.kubeconfig_path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(script)
            .env("KUBECONFIG", kubeconfig)
            .env("CRD", crd)
            .env("HOME", home.path())
            .output()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("running bash: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/kubectl.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(
        stdout.contains("all ") && stdout.contains("checks passed"),
        "{stdout}"
    );
    sim.shutdown().await;
}

//! `linkerd trust inspect` (and `renew`, `status`) through a whole rotation driven by the real
//! operator on the simulator: at every phase the pods that have not converged are listed with
//! the right reason and fix, and they disappear as the guide's steps are done.

mod rotating;

use rotating::{restart_app, wait_phase};
use serde_json::Value;
use std::path::Path;
use trust_rotation_crds::Phase;

const BIN: &str = env!("CARGO_BIN_EXE_linkerd-trust");

async fn cli(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .expect("run linkerd-trust");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn inspect(kubeconfig: &Path) -> Value {
    let (code, stdout, stderr) =
        cli(kubeconfig, &["inspect", "-o", "json", "--timeout", "5s"]).await;
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).expect("inspect -o json")
}

fn pods(report: &Value) -> Vec<Value> {
    report["pods"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_follows_a_whole_rotation() {
    let rotating::Rotating {
        sim,
        kubeconfig: kc,
        operator,
    } = rotating::start().await;
    let client = sim.client();

    wait_phase(&client, Phase::Synced).await;
    let r = inspect(&kc).await;
    assert_eq!(r["phase"], "Synced");
    assert!(pods(&r).is_empty(), "{r:#}");
    let old_issuer = r["activeIssuer"].as_str().expect("issuer").to_string();

    // Step 1: renew the anchor; the bundle expands and every workload pod is stale.
    let (code, stdout, stderr) = cli(&kc, &["renew", "anchor"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("linkerd-trust-anchor"));
    wait_phase(&client, Phase::PropagatingTrustRoots).await;
    let r = inspect(&kc).await;
    assert_eq!(r["phase"], "PropagatingTrustRoots");
    assert_eq!(r["observed"]["trustBundle"]["summary"], "0/4", "{r:#}");
    let listed = pods(&r);
    assert_eq!(listed.len(), 4, "{r:#}");
    for p in &listed {
        assert_eq!(p["bundle"], "stale", "{p:#}");
        assert_eq!(p["certificate"], "active", "{p:#}");
        let owner = p["owner"].as_str().expect("owner");
        assert_eq!(
            p["fix"],
            format!("kubectl -n emojivoto rollout restart {owner}")
        );
    }
    let (_, text, _) = cli(&kc, &["inspect", "--no-probe"]).await;
    assert!(
        text.contains("Phase:               PropagatingTrustRoots"),
        "{text}"
    );

    // Step 2: restart the data plane; everything converges while waiting for the issuer.
    restart_app(&kc).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation).await;
    let r = inspect(&kc).await;
    assert!(pods(&r).is_empty(), "{r:#}");
    assert_eq!(r["observed"]["trustBundle"]["summary"], "4/4");

    // Step 3: renew the issuer; running proxies still hold the old issuer's certificates.
    let (code, _, stderr) = cli(&kc, &["renew", "issuer"]).await;
    assert_eq!(code, 0, "{stderr}");
    wait_phase(&client, Phase::RenewingWorkloadCerts).await;
    let r = inspect(&kc).await;
    assert_ne!(r["activeIssuer"], old_issuer.as_str());
    let listed = pods(&r);
    assert_eq!(listed.len(), 4, "{r:#}");
    for p in &listed {
        assert_eq!(p["bundle"], "current", "{p:#}");
        assert_eq!(p["certificate"], "other-issuer", "{p:#}");
        assert_eq!(p["certificateDetail"], old_issuer.as_str(), "{p:#}");
        // When the old certificate expires (so when the proxy renews by itself at the
        // latest), and which proxy runs there.
        let expires = p["certificateExpires"].as_str().expect("an expiry");
        let expires: jiff::Timestamp = expires.parse().expect("RFC 3339");
        assert!(expires > jiff::Timestamp::now(), "{p:#}");
        assert_eq!(p["proxyVersion"], "edge-sim", "{p:#}");
    }
    assert_eq!(r["observed"]["workloadCertificates"]["summary"], "0/4");

    // Restart: new certificates; the operator reduces the bundle, pods are stale again.
    restart_app(&kc).await;
    wait_phase(&client, Phase::RemovingOldTrustRoots).await;
    let r = inspect(&kc).await;
    let listed = pods(&r);
    assert_eq!(listed.len(), 4, "{r:#}");
    assert!(
        listed
            .iter()
            .all(|p| p["bundle"] == "stale" && p["certificate"] == "active"),
        "{r:#}"
    );

    // Step 4: the final restart completes the rotation.
    restart_app(&kc).await;
    wait_phase(&client, Phase::Synced).await;
    let r = inspect(&kc).await;
    assert!(pods(&r).is_empty(), "{r:#}");
    // (The operator runs in this process, not as a Deployment: check the prerequisites.)
    let (code, stdout, _) = cli(&kc, &["check", "--pre", "--wait=10s", "-o", "short"]).await;
    assert_eq!((code, stdout.as_str()), (0, "Status check results are √\n"));

    operator.abort();
    sim.shutdown().await;
}

//! The `cluster-sim serve` binary: writes the kubeconfig only once it serves, answers with
//! it, and exits cleanly on SIGTERM.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn serve_writes_a_working_kubeconfig_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = dir.path().join("sub").join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cluster-sim"))
        .args(["serve", "--addr", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--fault-error", "list:secrets:500:1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting cluster-sim: {e}"));
    let mut written = false;
    for _ in 0..600 {
        if kubeconfig.exists() {
            written = true;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("cluster-sim exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(written, "no kubeconfig after 30s");
    let text = std::fs::read_to_string(&kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.contains("current-context: cluster-sim")
            && text.contains("certificate-authority-data:")
            && text.contains("token:")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kubeconfig)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(
            mode, 0o600,
            "the kubeconfig holds a token: private to the user"
        );
    }

    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap_or_else(|e| panic!("{e}"));
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap_or_else(|e| panic!("{e}"));
    // The moment the kubeconfig exists, the server answers (over verified TLS).
    let names: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(
        names.contains(&"default".to_string()) && names.contains(&"kube-system".to_string()),
        "{names:?}"
    );
    // Fault flags reach the server.
    match Api::<k8s_openapi::api::core::v1::Secret>::all(client)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 500),
        other => panic!(
            "expected the injected 500, got {:?}",
            other.map(|l| l.items.len())
        ),
    }

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(killed.success());
    let mut exit = None;
    for _ in 0..200 {
        if let Ok(Some(status)) = child.try_wait() {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match exit {
        Some(status) => assert!(
            status.success(),
            "cluster-sim exited with {status} on SIGTERM"
        ),
        None => {
            let _ = child.kill();
            panic!("cluster-sim did not stop within 10s of SIGTERM");
        }
    }
}

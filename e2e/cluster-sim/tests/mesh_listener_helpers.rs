//! Meshes beyond one process's open-file limit: admin ports in helper processes.

mod mesh_common;

use cluster_sim::mesh::listeners::ListenerConfig;
use cluster_sim::mesh::{self, Durations, MeshConfig, Topology};
use cluster_sim::store::Store;
use mesh_common::*;
use std::time::Duration;

fn pod_ips(store: &Store, ns: &str, app: &str) -> Vec<String> {
    pods_of(store, ns, app)
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_beyond_the_per_process_limit_answer_from_helper_processes() {
    let store = Store::new();
    let cfg = MeshConfig {
        topology: Topology::Demo,
        durations: Durations::fast(),
        // Three listeners here, three in each helper: the demo's meshed pods need several.
        listeners: ListenerConfig {
            per_process: Some(3),
            helper_exe: Some(env!("CARGO_BIN_EXE_cluster-sim").into()),
        },
        ..Default::default()
    };
    let mesh = mesh::install(&store, &cfg).expect("install");
    mesh.converged(Duration::from_secs(60))
        .await
        .expect("the mesh converges with its admin ports spread over helpers");
    let helpers = mesh.listener_helpers().await;
    let first = chains(&store).await;
    assert!(
        first.len() > 6,
        "the demo has more meshed pods than two processes hold"
    );
    assert!(
        helpers * 3 + 3 >= first.len() && helpers >= 2,
        "{helpers} helpers for {} meshed pods",
        first.len()
    );
    // Every proxy answers, over TLS with its identity and in plain HTTP, wherever its port is.
    for (pod, chain) in &first {
        assert!(
            chain.as_ref().is_ok_and(|c| c.len() >= 2),
            "{pod}: {chain:?}"
        );
    }
    for ip in pod_ips(&store, "emojivoto", "web") {
        let (code, _) = admin_get(&ip, "/ready").await.expect("admin GET");
        assert_eq!(code, 200, "{ip}/ready");
    }

    // A rollout closes the old pods' ports (in whichever process held them) and the new
    // pods' proxies answer.
    let old = pod_ips(&store, "emojivoto", "web");
    restart_and_wait(&store, &[("emojivoto", "web"), ("emojivoto", "emoji")]).await;
    wait_for(
        "the old web pods to be gone",
        Duration::from_secs(30),
        || {
            pod_ips(&store, "emojivoto", "web")
                .iter()
                .all(|ip| !old.contains(ip))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for ip in &old {
        let refused = tokio::net::TcpStream::connect((ip.as_str(), 4191)).await;
        assert!(
            refused.is_err(),
            "{ip}:4191 still accepts after its pod is gone"
        );
    }
    for (pod, chain) in chains(&store).await {
        assert!(chain.is_ok(), "{pod} after the rollout: {chain:?}");
    }
    mesh.shutdown().await;
}

#[test]
fn without_helpers_a_mesh_beyond_the_limit_is_refused_with_what_to_do() {
    let cfg = ListenerConfig {
        per_process: Some(100),
        helper_exe: None,
    };
    let err = mesh::listeners::AdminPorts::new(&cfg, 500)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("500 meshed pods need about 1524 open files"),
        "{err}"
    );
    assert!(err.contains("ulimit -Hn"), "{err}");
    assert!(err.contains("run the `cluster-sim` binary"), "{err}");
    assert!(err.contains("at most 100 pods"), "{err}");
    assert!(mesh::listeners::AdminPorts::new(&cfg, 100).is_ok());
}

//! Deployments, pods and the data plane: rolling updates within maxSurge/maxUnavailable,
//! the injector's fail-open and env merge, a proxy crash-looping on a bad duration, and
//! accelerated certificate refresh.

mod mesh_common;

use cluster_sim::mesh::Durations;
use mesh_common::*;
use serde_json::json;
use std::time::Duration;

fn ready(p: &serde_json::Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_honours_max_surge_and_max_unavailable() {
    let (store, mesh) = demo(Durations::fast()).await;
    store
        .create(&k("", "namespaces"), json!({"metadata": {"name": "plain"}}))
        .unwrap();
    store
        .create(&k("apps", "deployments"), json!({
            "metadata": {"name": "api", "namespace": "plain"},
            "spec": {
                "replicas": 4,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "api:1"}]}},
            },
        }))
        .unwrap();
    wait_for("the first rollout", Duration::from_secs(10), || {
        rollout_done(&store, "plain", "api")
    })
    .await;
    let before: Vec<String> = store
        .list(&k("", "pods"), Some("plain"))
        .0
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(before.len(), 4);
    assert!(
        store
            .list(&k("", "pods"), Some("plain"))
            .0
            .iter()
            .all(|p| p["spec"]["containers"].as_array().unwrap().len() == 1),
        "not injected"
    );

    restart(&store, "plain", "api");
    let (mut max_pods, mut min_ready) = (0, usize::MAX);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let pods = store.list(&k("", "pods"), Some("plain")).0;
        max_pods = max_pods.max(pods.len());
        min_ready = min_ready.min(pods.iter().filter(|p| ready(p)).count());
        if rollout_done(&store, "plain", "api")
            && pods
                .iter()
                .all(|p| !before.contains(&p["metadata"]["name"].as_str().unwrap().to_string()))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(max_pods <= 5, "maxSurge 1: at most 5 pods, saw {max_pods}");
    assert!(
        min_ready >= 4,
        "maxUnavailable 0: never fewer than 4 ready, saw {min_ready}"
    );
    let d = store
        .get(&k("apps", "deployments"), Some("plain"), "api")
        .unwrap();
    assert_eq!(d["status"]["updatedReplicas"], 4);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let conds = d["status"]["conditions"].as_array().unwrap();
    assert!(conds
        .iter()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"));
    assert!(conds
        .iter()
        .any(|c| c["type"] == "Available" && c["status"] == "True"));
    let rs = store.list(&k("apps", "replicasets"), Some("plain")).0;
    assert_eq!(rs.len(), 2, "old ReplicaSet kept, scaled to zero");
    assert!(rs.iter().any(|r| r["spec"]["replicas"] == 0));

    // A deleted pod is replaced, on a new IP.
    let victim = store.list(&k("", "pods"), Some("plain")).0[0].clone();
    store
        .delete(
            &k("", "pods"),
            Some("plain"),
            victim["metadata"]["name"].as_str().unwrap(),
        )
        .unwrap();
    wait_for("the replacement", Duration::from_secs(10), || {
        let pods = store.list(&k("", "pods"), Some("plain")).0;
        pods.len() == 4 && pods.iter().all(|p| ready(p))
    })
    .await;
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injector_fails_open_and_merges_additional_env() {
    let (store, mesh) = demo(Durations::fast()).await;
    // Namespace-level env, overridden per workload.
    store
        .mutate(&k("", "namespaces"), None, "emojivoto", |n| {
            n["metadata"]["annotations"]["config.linkerd.io/proxy-additional-env"] =
                json!(r#"[{"name":"LINKERD2_PROXY_IDENTITY_MAX_REFRESH","value":"5m"},{"name":"EXTRA_NS","value":"ns"}]"#);
            Ok(())
        })
        .unwrap();
    store
        .mutate(&k("apps", "deployments"), Some("emojivoto"), "web", |d| {
            d["spec"]["template"]["metadata"]["annotations"]
                ["config.linkerd.io/proxy-additional-env"] =
                json!(r#"[{"name":"LINKERD2_PROXY_IDENTITY_MAX_REFRESH","value":"1s"}]"#);
            Ok(())
        })
        .unwrap();
    wait_for("web to roll", Duration::from_secs(10), || {
        rollout_done(&store, "emojivoto", "web")
    })
    .await;
    restart_and_wait(&store, &[("emojivoto", "emoji")]).await;
    let web = pods_of(&store, "emojivoto", "web").pop().unwrap();
    assert_eq!(
        env_value(&web, "LINKERD2_PROXY_IDENTITY_MAX_REFRESH").as_deref(),
        Some("1s"),
        "the workload wins"
    );
    assert_eq!(env_value(&web, "EXTRA_NS").as_deref(), Some("ns"));
    let emoji = pods_of(&store, "emojivoto", "emoji").pop().unwrap();
    assert_eq!(
        env_value(&emoji, "LINKERD2_PROXY_IDENTITY_MAX_REFRESH").as_deref(),
        Some("5m")
    );

    // MAX_REFRESH=1s: the proxy re-certifies every second, visible on its metrics.
    let ip = web["status"]["podIP"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (_, metrics) = admin_get(&ip, "/metrics").await.unwrap();
    let ok: u64 = metrics
        .lines()
        .find(|l| l.starts_with("control_identity_cert_refreshes_total{result=\"ok\"}"))
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        ok >= 3,
        "expected at least 3 refreshes in 3.5s, got {ok}:\n{metrics}"
    );

    // No injector: pods start without a proxy (failurePolicy: Ignore).
    store
        .mutate(
            &k("apps", "deployments"),
            Some("linkerd"),
            "linkerd-proxy-injector",
            |d| {
                d["spec"]["replicas"] = json!(0);
                Ok(())
            },
        )
        .unwrap();
    wait_for("the injector to go", Duration::from_secs(10), || {
        store
            .list(&k("", "pods"), Some("linkerd"))
            .0
            .iter()
            .all(|p| {
                p["metadata"]["labels"]["linkerd.io/control-plane-component"] != "proxy-injector"
            })
    })
    .await;
    restart_and_wait(&store, &[("emojivoto", "voting")]).await;
    let voting = pods_of(&store, "emojivoto", "voting").pop().unwrap();
    assert!(
        voting["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "linkerd-proxy"),
        "admitted without a proxy"
    );
    assert!(voting["metadata"]["labels"]["linkerd.io/control-plane-ns"].is_null());
    assert_eq!(
        mesh.oracle().report().current.certified_pods,
        5,
        "the unmeshed pod left the mesh"
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_refresh_duration_crash_loops_the_proxy_visibly() {
    let (store, mesh) = demo(Durations::fast()).await;
    store
        .mutate(&k("apps", "deployments"), Some("emojivoto"), "web", |d| {
            d["spec"]["template"]["metadata"]["annotations"]
                ["config.linkerd.io/proxy-additional-env"] =
                json!(r#"[{"name":"LINKERD2_PROXY_IDENTITY_MAX_REFRESH","value":"1h30m"}]"#);
            Ok(())
        })
        .unwrap();
    wait_for(
        "the new web pod's proxy to crash-loop",
        Duration::from_secs(10),
        || {
            pods_of(&store, "emojivoto", "web").iter().any(|p| {
                p["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c["name"] == "linkerd-proxy"
                                && c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                                && c["restartCount"].as_i64() >= Some(1)
                                && c["lastState"]["terminated"]["message"]
                                    .as_str()
                                    .unwrap_or("")
                                    .contains("1h30m")
                        })
                    })
            })
        },
    )
    .await;
    // The old pod keeps serving; the rollout is stuck, as on a real cluster.
    assert_eq!(
        pods_of(&store, "emojivoto", "web")
            .iter()
            .filter(|p| ready(p))
            .count(),
        1
    );
    assert!(!rollout_done(&store, "emojivoto", "web"));
    let now = mesh.oracle().report().current;
    assert_eq!(now.ratio, 1.0, "the crash-looping pod takes no traffic");
    assert_eq!(
        now.pods_without_valid_certificate, 1,
        "but it is a meshed pod without a certificate"
    );
    mesh.shutdown().await;
}

/// Every strategy keeps its bounds during a rollout restart: at most replicas + maxSurge
/// pods, at least replicas - maxUnavailable Ready, and it completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_stay_within_their_bounds_for_every_strategy() {
    let store = cluster_sim::store::Store::new();
    let cfg = cluster_sim::mesh::MeshConfig {
        durations: Durations::fast(),
        ..Default::default()
    };
    let mesh = cluster_sim::mesh::install(&store, &cfg).unwrap();
    store
        .create(&k("", "namespaces"), json!({"metadata": {"name": "r"}}))
        .unwrap();
    // (name, replicas, maxSurge, maxUnavailable, resolved surge, resolved unavailable)
    let cases = [
        ("one", 1, json!(1), json!(0), 1, 0),
        ("no-surge", 3, json!(0), json!(1), 0, 1),
        ("percent", 4, json!("50%"), json!("25%"), 2, 1),
        ("wide", 5, json!(2), json!(2), 2, 2),
        (
            "defaults",
            6,
            serde_json::Value::Null,
            serde_json::Value::Null,
            2,
            1,
        ),
    ];
    for (name, replicas, surge, unavailable, _, _) in &cases {
        let mut rolling = json!({});
        if !surge.is_null() {
            rolling["maxSurge"] = surge.clone();
            rolling["maxUnavailable"] = unavailable.clone();
        }
        store
            .create(&k("apps", "deployments"), json!({
                "metadata": {"name": name, "namespace": "r"},
                "spec": {
                    "replicas": replicas,
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
                },
            }))
            .unwrap();
    }
    for (name, ..) in &cases {
        wait_for(name, Duration::from_secs(10), || {
            rollout_done(&store, "r", name)
        })
        .await;
        restart(&store, "r", name);
    }
    let mut worst: std::collections::HashMap<&str, (usize, usize)> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pods = store.list(&k("", "pods"), Some("r")).0;
        for (name, ..) in &cases {
            let mine: Vec<_> = pods
                .iter()
                .filter(|p| p["metadata"]["labels"]["app"] == *name)
                .collect();
            let e = worst.entry(name).or_insert((0, usize::MAX));
            e.0 = e.0.max(mine.len());
            e.1 = e.1.min(mine.iter().filter(|p| ready(p)).count());
        }
        tokio::task::yield_now().await;
        let done = cases.iter().all(|(name, ..)| {
            rollout_done(&store, "r", name)
                && store
                    .get(&k("apps", "deployments"), Some("r"), name)
                    .unwrap()["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    == "2"
        });
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollouts did not finish: {worst:?}"
        );
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for (name, replicas, _, _, surge, unavailable) in &cases {
        let (max_pods, min_ready) = worst[name];
        assert!(
            max_pods <= (replicas + surge) as usize,
            "{name}: {max_pods} pods > {replicas} + {surge}"
        );
        assert!(
            min_ready + *unavailable as usize >= *replicas as usize,
            "{name}: only {min_ready} Ready, maxUnavailable {unavailable}"
        );
        // The sampling saw the rollout use its room (so the bounds above were tested).
        assert!(
            *surge == 0 || max_pods > *replicas as usize,
            "{name}: never surged"
        );
        assert!(
            *surge > 0 || min_ready < *replicas as usize,
            "{name}: never went below {replicas}"
        );
    }
    mesh.shutdown().await;
}

//! The workloads of a real cluster on the `demo-all-kinds` topology (three Nodes):
//! StatefulSets (ordered pods, partitioned and OnDelete updates), DaemonSets (one pod per
//! Node, maxUnavailable/maxSurge), Jobs and CronJobs whose meshed pods finish (and whose
//! proxies stop with them), TTL clean-up, graceful termination that keeps a pod's proxy
//! serving until its grace period ends, node-pressure eviction, custom admin ports,
//! opted-out and bare pods, and the oracle's view of all of them.

mod mesh_common;

use cluster_sim::mesh::Durations;
use cluster_sim::store::Store;
use mesh_common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn meshed_ns(store: &Store, ns: &str) {
    store
        .create(
            &k("", "namespaces"),
            json!({"metadata": {"name": ns, "annotations": {"linkerd.io/inject": "enabled"}}}),
        )
        .unwrap();
}

fn pods_in(store: &Store, ns: &str) -> Vec<Arc<Value>> {
    store.list(&k("", "pods"), Some(ns)).0
}

fn get(store: &Store, group: &str, plural: &str, ns: &str, n: &str) -> Arc<Value> {
    store
        .get(&k(group, plural), Some(ns), n)
        .unwrap_or_else(|| panic!("{plural} {ns}/{n} not found"))
}

fn restart_template(store: &Store, group: &str, plural: &str, ns: &str, n: &str) {
    let stamp = format!("{}", jiff::Timestamp::now().as_nanosecond());
    store
        .mutate(&k(group, plural), Some(ns), n, |o| {
            o["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
                json!(stamp);
            Ok(())
        })
        .unwrap();
}

fn sts(ns: &str, n: &str, replicas: i64, policy: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": n, "namespace": ns},
        "spec": {
            "replicas": replicas, "serviceName": n, "podManagementPolicy": policy,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "selector": {"matchLabels": {"app": n}},
            "template": {"metadata": {"labels": {"app": n}}, "spec": {"containers": [{"name": "db", "image": "db:1"}]}},
        },
    })
}

fn sts_rolled_out(store: &Store, ns: &str, n: &str) -> bool {
    let s = get(store, "apps", "statefulsets", ns, n);
    let st = &s["status"];
    let want = s["spec"]["replicas"].as_i64().unwrap_or(1);
    st["observedGeneration"] == s["metadata"]["generation"]
        && st["readyReplicas"].as_i64() == Some(want)
        && st["updatedReplicas"].as_i64() == Some(want)
        && st["currentRevision"] == st["updateRevision"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_come_up_in_order_and_update_from_the_highest_ordinal() {
    let (store, mesh) = all_kinds(Durations::fast()).await;
    meshed_ns(&store, "db");
    store
        .create(
            &k("apps", "statefulsets"),
            sts("db", "pg", 3, "OrderedReady"),
        )
        .unwrap();
    // OrderedReady: pg-N exists only once pg-0..N-1 are Running and Ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ps = pods_in(&store, "db");
        for p in &ps {
            let ord: usize = name(p).trim_start_matches("pg-").parse().unwrap();
            for before in 0..ord {
                let prev = ps.iter().find(|q| name(q) == format!("pg-{before}"));
                assert!(
                    prev.is_some_and(|q| ready(q)),
                    "pg-{ord} exists while pg-{before} is not Ready"
                );
            }
        }
        if sts_rolled_out(&store, "db", "pg") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pg never rolled out"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let set = get(&store, "apps", "statefulsets", "db", "pg");
    let rev = set["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        rev.starts_with("pg-"),
        "revision named after the set: {rev}"
    );
    for p in pods_in(&store, "db") {
        let l = &p["metadata"]["labels"];
        assert_eq!(l["controller-revision-hash"], rev.as_str());
        assert_eq!(l["statefulset.kubernetes.io/pod-name"], name(&p).as_str());
        assert_eq!(
            l["linkerd.io/proxy-statefulset"], "pg",
            "injector owner label"
        );
        assert!(p["spec"]["nodeName"].as_str().unwrap().starts_with("node-"));
        assert_eq!(p["spec"]["hostname"], name(&p).as_str());
    }
    assert!(store
        .get(&k("apps", "controllerrevisions"), Some("db"), &rev)
        .is_some());

    // A restart replaces pg-2, then pg-1, then pg-0, one at a time.
    let before: Vec<(String, String)> = pods_in(&store, "db")
        .iter()
        .map(|p| (name(p), p["metadata"]["uid"].as_str().unwrap().to_string()))
        .collect();
    restart_template(&store, "apps", "statefulsets", "db", "pg");
    let mut replaced_order: Vec<String> = Vec::new();
    let mut max_unavailable = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ps = pods_in(&store, "db");
        let healthy = ps
            .iter()
            .filter(|p| ready(p) && p["metadata"]["deletionTimestamp"].is_null())
            .count();
        max_unavailable = max_unavailable.max(3 - healthy.min(3));
        for (n, old_uid) in &before {
            let gone = ps
                .iter()
                .find(|p| &name(p) == n)
                .is_none_or(|p| p["metadata"]["uid"].as_str() != Some(old_uid));
            if gone && !replaced_order.contains(n) {
                replaced_order.push(n.clone());
            }
        }
        if replaced_order.len() == 3 && sts_rolled_out(&store, "db", "pg") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "restart never finished: {replaced_order:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(replaced_order, ["pg-2", "pg-1", "pg-0"]);
    assert_eq!(max_unavailable, 1, "maxUnavailable defaults to 1");
    let set = get(&store, "apps", "statefulsets", "db", "pg");
    assert_ne!(set["status"]["updateRevision"], rev.as_str());
    assert_eq!(
        set["status"]["currentRevision"],
        set["status"]["updateRevision"]
    );
    assert_eq!(set["status"]["currentReplicas"], 3);

    // partition: 2 updates only pg-2; the others stay at the current revision.
    store
        .mutate(&k("apps", "statefulsets"), Some("db"), "pg", |o| {
            o["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(2);
            o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("db:2");
            Ok(())
        })
        .unwrap();
    wait_for("the partitioned update", Duration::from_secs(15), || {
        let s = get(&store, "apps", "statefulsets", "db", "pg");
        s["status"]["updatedReplicas"] == 1
            && s["status"]["readyReplicas"] == 3
            && s["status"]["observedGeneration"] == s["metadata"]["generation"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = get(&store, "apps", "statefulsets", "db", "pg");
    assert_ne!(
        s["status"]["currentRevision"],
        s["status"]["updateRevision"]
    );
    let image = |n: &str| {
        get(&store, "", "pods", "db", n)["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "db")
            .unwrap()["image"]
            .clone()
    };
    assert_eq!(image("pg-2"), "db:2");
    assert_eq!(image("pg-1"), "db:1");
    assert_eq!(image("pg-0"), "db:1");

    // Parallel: all pods at once.
    store
        .create(
            &k("apps", "statefulsets"),
            sts("db", "cache", 3, "Parallel"),
        )
        .unwrap();
    wait_for("cache pods", Duration::from_secs(5), || {
        pods_in(&store, "db")
            .iter()
            .filter(|p| name(p).starts_with("cache-"))
            .count()
            == 3
    })
    .await;
    let cache: Vec<Arc<Value>> = pods_in(&store, "db")
        .into_iter()
        .filter(|p| name(p).starts_with("cache-"))
        .collect();
    assert!(
        cache.iter().filter(|p| !ready(p)).count() >= 2,
        "Parallel creates without waiting for readiness"
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_per_node_and_rolls_within_its_bounds() {
    let (store, mesh) = all_kinds(Durations::fast()).await;
    let ds_pods = |store: &Store| -> Vec<Arc<Value>> {
        pods_in(store, "emojivoto")
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "node-agent")
            .collect()
    };
    let ps = ds_pods(&store);
    let mut nodes: Vec<String> = ps
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node-1", "node-2", "node-3"]);
    assert!(ps
        .iter()
        .all(|p| p["metadata"]["labels"]["linkerd.io/proxy-daemonset"] == "node-agent"));
    let d = get(&store, "apps", "daemonsets", "emojivoto", "node-agent");
    assert_eq!(d["status"]["desiredNumberScheduled"], 3);
    assert_eq!(d["status"]["numberAvailable"], 3);

    let rolled = |store: &Store| {
        let d = get(store, "apps", "daemonsets", "emojivoto", "node-agent");
        d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && d["status"]["updatedNumberScheduled"] == 3
            && d["status"]["numberAvailable"] == 3
            && ds_pods(store).len() == 3
    };
    // Default maxUnavailable 1: never more than one node without an available pod.
    for (surge, unavailable, min_ready, max_pods) in [(0, 1, 2, 3), (1, 0, 3, 4)] {
        store
            .mutate(
                &k("apps", "daemonsets"),
                Some("emojivoto"),
                "node-agent",
                |o| {
                    o["spec"]["updateStrategy"]["rollingUpdate"] =
                        json!({"maxSurge": surge, "maxUnavailable": unavailable});
                    Ok(())
                },
            )
            .unwrap();
        wait_for("the strategy change", Duration::from_secs(5), || {
            rolled(&store)
        })
        .await;
        let before: Vec<String> = ds_pods(&store).iter().map(|p| name(p)).collect();
        restart_template(&store, "apps", "daemonsets", "emojivoto", "node-agent");
        let (mut seen_min, mut seen_max) = (usize::MAX, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ps = ds_pods(&store);
            let live: Vec<&Arc<Value>> = ps
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            seen_min = seen_min.min(live.iter().filter(|p| ready(p)).count());
            seen_max = seen_max.max(live.len());
            if rolled(&store) && ps.iter().all(|p| !before.contains(&name(p))) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ds restart (surge {surge}) never finished"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            seen_min >= min_ready,
            "maxSurge {surge}/maxUnavailable {unavailable}: {seen_min} ready at worst"
        );
        assert!(
            seen_max <= max_pods,
            "maxSurge {surge}: {seen_max} live pods at most"
        );
    }

    // OnDelete: a template change replaces nothing until a pod is deleted.
    store
        .mutate(
            &k("apps", "daemonsets"),
            Some("emojivoto"),
            "node-agent",
            |o| {
                o["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
                o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("agent:2");
                Ok(())
            },
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let d = get(&store, "apps", "daemonsets", "emojivoto", "node-agent");
    assert_eq!(d["status"]["updatedNumberScheduled"], 0);
    let victim = ds_pods(&store)[0].clone();
    cluster_sim::api::workloads::delete_pod(&store, "emojivoto", &name(&victim), None).unwrap();
    wait_for(
        "the replacement on the same node",
        Duration::from_secs(10),
        || {
            ds_pods(&store).iter().any(|p| {
                p["spec"]["nodeName"] == victim["spec"]["nodeName"]
                    && ready(p)
                    && name(p) != name(&victim)
            })
        },
    )
    .await;
    let d = get(&store, "apps", "daemonsets", "emojivoto", "node-agent");
    assert_eq!(d["status"]["updatedNumberScheduled"], 1);
    mesh.shutdown().await;
}

fn job(ns: &str, n: &str, script: &str, extra: Value) -> Value {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": n, "namespace": ns},
        "spec": {
            "template": {
                "metadata": {"annotations": {"config.linkerd.io/proxy-enable-native-sidecar": "true"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox", "command": ["sh", "-c", script]}]},
            },
        },
    });
    json_patch::merge(&mut j, &extra);
    cluster_sim::api::workloads::default_workload(&mut j);
    j
}

fn condition(o: &Value, t: &str) -> Option<Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t && c["status"] == "True")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finish_their_pods_and_stop_their_proxies() {
    let (store, mesh) = all_kinds(Durations::fast()).await;
    meshed_ns(&store, "batch");
    store
        .create(
            &k("batch", "jobs"),
            job(
                "batch",
                "migrate",
                "sleep 0.3",
                json!({"spec": {"completions": 2, "parallelism": 1}}),
            ),
        )
        .unwrap();
    // While it runs, its pod is meshed (a native-sidecar proxy) and a certified peer.
    wait_for("a running migrate pod", Duration::from_secs(10), || {
        pods_in(&store, "batch").iter().any(|p| ready(p))
    })
    .await;
    let p = pods_in(&store, "batch")
        .into_iter()
        .find(|p| ready(p))
        .unwrap();
    assert_eq!(p["metadata"]["labels"]["linkerd.io/proxy-job"], "migrate");
    assert_eq!(
        p["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "migrate"
    );
    assert_eq!(p["spec"]["initContainers"][0]["name"], "linkerd-proxy");
    assert_eq!(p["spec"]["initContainers"][0]["restartPolicy"], "Always");
    wait_for("migrate to complete", Duration::from_secs(15), || {
        condition(
            &get(&store, "batch", "jobs", "batch", "migrate"),
            "Complete",
        )
        .is_some()
    })
    .await;
    let j = get(&store, "batch", "jobs", "batch", "migrate");
    assert_eq!(j["status"]["succeeded"], 2);
    assert!(j["status"]["completionTime"].is_string());
    let c = condition(&j, "Complete").unwrap();
    assert_eq!(c["reason"], "CompletionsReached");
    assert!(condition(&j, "SuccessCriteriaMet").is_some());
    let done = pods_in(&store, "batch");
    assert_eq!(done.len(), 2);
    for p in &done {
        assert_eq!(p["status"]["phase"], "Succeeded");
        assert_eq!(
            p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        assert!(p["status"]["initContainerStatuses"][0]["state"]["terminated"].is_object());
        // The proxy stopped with the pod: its admin port is closed.
        let ip = p["status"]["podIP"].as_str().unwrap();
        assert!(
            tokio::net::TcpStream::connect((ip, 4191)).await.is_err(),
            "{ip}:4191 still open"
        );
    }
    let snap = mesh.oracle().sample();
    assert!(
        !snap.failing_pods.iter().any(|p| p.starts_with("batch/")),
        "finished pods are no mTLS peers: {snap:?}"
    );

    // A failing Job: backoffLimit 1 → two failed pods, then Failed.
    store
        .create(
            &k("batch", "jobs"),
            job(
                "batch",
                "broken",
                "sleep 0.1; exit 3",
                json!({"spec": {"backoffLimit": 1}}),
            ),
        )
        .unwrap();
    wait_for("broken to fail", Duration::from_secs(20), || {
        condition(&get(&store, "batch", "jobs", "batch", "broken"), "Failed").is_some()
    })
    .await;
    let j = get(&store, "batch", "jobs", "batch", "broken");
    let c = condition(&j, "Failed").unwrap();
    assert_eq!(c["reason"], "BackoffLimitExceeded");
    assert_eq!(c["message"], "Job has reached the specified backoff limit");
    assert_eq!(j["status"]["failed"], 2);
    assert!(condition(&j, "Complete").is_none());

    // Without a native sidecar the proxy keeps the pod Running after the work ends, as on
    // a real cluster: the Job never completes.
    store
        .create(&k("batch", "jobs"), {
            let mut j = job("batch", "stuck", "sleep 0.1", json!({}));
            j["spec"]["template"]["metadata"]["annotations"] = json!({});
            j
        })
        .unwrap();
    wait_for("stuck's work to end", Duration::from_secs(10), || {
        pods_in(&store, "batch").iter().any(|p| {
            p["metadata"]["labels"]["job-name"] == "stuck"
                && p["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["name"] == "work" && c["state"]["terminated"].is_object())
                    })
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = pods_in(&store, "batch")
        .into_iter()
        .find(|p| p["metadata"]["labels"]["job-name"] == "stuck")
        .unwrap();
    assert_eq!(p["status"]["phase"], "Running");
    assert!(condition(&get(&store, "batch", "jobs", "batch", "stuck"), "Complete").is_none());
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_creates_named_jobs_on_schedule_and_keeps_its_history() {
    let (store, mesh) = all_kinds(Durations::fast()).await;
    // nightly-report: every two schedule minutes (2s with fast durations), history 3.
    let mut seen: std::collections::BTreeSet<String> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 5 {
        for j in store.list(&k("batch", "jobs"), Some("emojivoto")).0 {
            seen.insert(name(&j));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {seen:?} in 30s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let minutes: Vec<i64> = seen
        .iter()
        .map(|n| n.strip_prefix("nightly-report-").unwrap().parse().unwrap())
        .collect();
    for w in minutes.windows(2) {
        assert_eq!(
            w[1] - w[0],
            2,
            "*/2: one Job every two minutes: {minutes:?}"
        );
    }
    assert!(minutes.iter().all(|m| m % 2 == 0));
    wait_for(
        "history trimmed to 3 successful jobs",
        Duration::from_secs(10),
        || {
            let js = store.list(&k("batch", "jobs"), Some("emojivoto")).0;
            js.iter()
                .filter(|j| condition(j, "Complete").is_some())
                .count()
                <= 3
        },
    )
    .await;
    let finished: Vec<Arc<Value>> = pods_in(&store, "emojivoto")
        .into_iter()
        .filter(|p| {
            p["metadata"]["labels"]["app"] == "nightly-report"
                && p["status"]["phase"] == "Succeeded"
        })
        .collect();
    assert!(!finished.is_empty());
    assert!(finished
        .iter()
        .all(|p| p["metadata"]["labels"]["linkerd.io/proxy-cronjob"] == "nightly-report"));
    let cj = get(&store, "batch", "cronjobs", "emojivoto", "nightly-report");
    assert!(cj["status"]["lastScheduleTime"].is_string());
    assert!(cj["status"]["lastSuccessfulTime"].is_string());
    let j = store
        .list(&k("batch", "jobs"), Some("emojivoto"))
        .0
        .pop()
        .unwrap();
    assert!(
        j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].is_string()
    );
    assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(
        mesh.oracle().report().min_ratio,
        1.0,
        "{:?}",
        mesh.oracle().report().intervals
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_after_finished_deletes_the_job_and_its_pods() {
    let (store, mesh) = all_kinds(Durations::fast()).await;
    meshed_ns(&store, "ttl");
    store
        .create(
            &k("batch", "jobs"),
            job(
                "ttl",
                "once",
                "sleep 0.1",
                json!({"spec": {"ttlSecondsAfterFinished": 2}}),
            ),
        )
        .unwrap();
    wait_for("once to complete", Duration::from_secs(10), || {
        store
            .get(&k("batch", "jobs"), Some("ttl"), "once")
            .is_some_and(|j| condition(&j, "Complete").is_some())
    })
    .await;
    let done_at = std::time::Instant::now();
    assert_eq!(
        pods_in(&store, "ttl").len(),
        1,
        "the finished pod stays until the TTL"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        store
            .get(&k("batch", "jobs"), Some("ttl"), "once")
            .is_some(),
        "not before the TTL"
    );
    wait_for("the TTL clean-up", Duration::from_secs(10), || {
        store
            .get(&k("batch", "jobs"), Some("ttl"), "once")
            .is_none()
            && pods_in(&store, "ttl").is_empty()
    })
    .await;
    assert!(
        done_at.elapsed() >= Duration::from_millis(900),
        "deleted {:?} after completion",
        done_at.elapsed()
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_pod_serves_tls_until_its_grace_period_ends() {
    let (store, mesh) = all_kinds(Durations::fast()).await;
    meshed_ns(&store, "slow");
    store
        .create(
            &k("", "pods"),
            json!({
                "metadata": {"name": "drainer", "namespace": "slow"},
                "spec": {
                    "terminationGracePeriodSeconds": 3,
                    "containers": [{"name": "app", "image": "app:1", "lifecycle": {"preStop": {"sleep": {"seconds": 60}}}}],
                },
            }),
        )
        .unwrap();
    wait_for("drainer ready", Duration::from_secs(10), || {
        store
            .get(&k("", "pods"), Some("slow"), "drainer")
            .is_some_and(|p| ready(&p))
    })
    .await;
    let pod = get(&store, "", "pods", "slow", "drainer");
    assert!(
        pod["metadata"]["labels"]
            .as_object()
            .unwrap()
            .keys()
            .all(|l| !l.starts_with("linkerd.io/proxy-")),
        "a bare pod has no owner label"
    );
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let identity = "default.slow.serviceaccount.identity.linkerd.cluster.local";
    probe_chain(&ip, identity)
        .await
        .expect("serving before deletion");

    cluster_sim::api::workloads::delete_pod(&store, "slow", "drainer", None).unwrap();
    let deleted_at = std::time::Instant::now();
    let p = get(&store, "", "pods", "slow", "drainer");
    assert!(p["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 3);
    // Terminating, still an mTLS peer and still answering on its admin port.
    while deleted_at.elapsed() < Duration::from_millis(2500) {
        let chain = probe_chain(&ip, identity).await;
        assert!(
            chain.is_ok(),
            "stopped serving {:?} into a 3s grace period: {chain:?}",
            deleted_at.elapsed()
        );
        assert!(store.get(&k("", "pods"), Some("slow"), "drainer").is_some());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let snap = mesh.oracle().sample();
    assert!(snap.certified_pods >= 1 && snap.ratio == 1.0, "{snap:?}");
    wait_for(
        "the pod to go once its grace period ended",
        Duration::from_secs(5),
        || store.get(&k("", "pods"), Some("slow"), "drainer").is_none(),
    )
    .await;
    assert!(deleted_at.elapsed() >= Duration::from_secs(3));
    assert!(tokio::net::TcpStream::connect((ip.as_str(), 4191))
        .await
        .is_err());
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_annotation_opt_out_and_node_pressure_eviction() {
    let (store, mesh) = all_kinds(Durations::fast()).await;
    meshed_ns(&store, "misc");
    store
        .create(
            &k("", "pods"),
            json!({
                "metadata": {"name": "custom", "namespace": "misc", "annotations": {"config.linkerd.io/admin-port": "9995"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            }),
        )
        .unwrap();
    store
        .create(
            &k("", "pods"),
            json!({
                "metadata": {"name": "outside", "namespace": "misc", "annotations": {"linkerd.io/inject": "disabled"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            }),
        )
        .unwrap();
    wait_for("both pods ready", Duration::from_secs(10), || {
        ["custom", "outside"].iter().all(|n| {
            store
                .get(&k("", "pods"), Some("misc"), n)
                .is_some_and(|p| ready(&p))
        })
    })
    .await;
    let custom = get(&store, "", "pods", "misc", "custom");
    let proxy = custom["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "linkerd-proxy")
        .unwrap()
        .clone();
    assert!(proxy["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "linkerd-admin" && p["containerPort"] == 9995));
    assert_eq!(
        env_value(&custom, "LINKERD2_PROXY_ADMIN_LISTEN_ADDR").as_deref(),
        Some("0.0.0.0:9995")
    );
    let ip = custom["status"]["podIP"].as_str().unwrap();
    let identity = "default.misc.serviceaccount.identity.linkerd.cluster.local";
    let chain = probe_chain_port(ip, 9995, identity)
        .await
        .expect("TLS on the custom admin port");
    assert!(chain.len() >= 2);
    assert!(
        probe_chain_port(ip, 4191, identity).await.is_err(),
        "nothing on 4191"
    );

    let outside = get(&store, "", "pods", "misc", "outside");
    assert_eq!(
        outside["spec"]["containers"].as_array().unwrap().len(),
        1,
        "opted out: no proxy"
    );
    assert!(outside["metadata"]["labels"]["linkerd.io/control-plane-ns"].is_null());

    // Node-pressure eviction of a Deployment's pod: Failed/Evicted, proxy gone, replaced.
    let web = pods_of(&store, "emojivoto", "web").pop().unwrap();
    let web_ip = web["status"]["podIP"].as_str().unwrap().to_string();
    store
        .mutate(&k("", "pods"), Some("emojivoto"), &name(&web), |p| {
            p["metadata"]["annotations"]["cluster-sim.test/evict"] =
                json!("The node was low on resource: memory.");
            Ok(())
        })
        .unwrap();
    wait_for(
        "the eviction and the replacement",
        Duration::from_secs(10),
        || {
            let ps = pods_of(&store, "emojivoto", "web");
            ps.iter().any(|p| p["status"]["reason"] == "Evicted")
                && ps.iter().any(|p| name(p) != name(&web) && ready(p))
        },
    )
    .await;
    let evicted = get(&store, "", "pods", "emojivoto", &name(&web));
    assert_eq!(evicted["status"]["phase"], "Failed");
    assert_eq!(
        evicted["status"]["message"],
        "The node was low on resource: memory."
    );
    assert!(tokio::net::TcpStream::connect((web_ip.as_str(), 4191))
        .await
        .is_err());
    assert_eq!(
        mesh.oracle().report().min_ratio,
        1.0,
        "{:?}",
        mesh.oracle().report().intervals
    );
    mesh.shutdown().await;
}

/// `minReadySeconds` makes pods available with time alone, no event: the StatefulSet
/// controller's one-second timer pass (not only its full pass every 5 s) counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_become_available_after_min_ready_seconds_without_an_event() {
    let (store, mesh) = all_kinds(Durations::fast()).await;
    store
        .create(
            &k("", "namespaces"),
            json!({"metadata": {"name": "slowready"}}),
        )
        .unwrap();
    let mut set = sts("slowready", "kv", 2, "Parallel");
    set["spec"]["minReadySeconds"] = json!(1);
    store.create(&k("apps", "statefulsets"), set).unwrap();
    let status =
        |f: &str| get(&store, "apps", "statefulsets", "slowready", "kv")["status"][f].as_i64();
    wait_for("kv pods Ready", Duration::from_secs(10), || {
        status("readyReplicas") == Some(2)
    })
    .await;
    // Ready less than a second ago at most (lastTransitionTime has whole seconds: available
    // within 2 s), then counted by the next timer pass.
    wait_for("kv pods available", Duration::from_millis(3500), || {
        status("availableReplicas") == Some(2)
    })
    .await;
    mesh.shutdown().await;
}

//! `linkerd trust plan` through the real binary on the simulator's all-kinds topology (four
//! Deployments, a StatefulSet with a PodDisruptionBudget, a DaemonSet on three Nodes and a
//! CronJob in emojivoto), with the real operator: the plan lists every meshed workload in the
//! operator's order with its strategy and replicas; a budget that never allows a disruption,
//! a bare pod and a Job pod are named with what a person does; `-o json` says the same; and,
//! with the automation on, the operator restarts the workloads in exactly the plan's order.

mod rotating;

use cluster_sim::mesh::Topology;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use rotating::{cli, wait_status};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trust_rotation_crds::{Phase, TrustAnchorRotation, WorkloadRestartState};
use trust_rotation_steps::plan::{Plan, RestartBy};

const NS: &str = "emojivoto";
const T: Duration = Duration::from_secs(180);

async fn plan_json(kc: &Path) -> Plan {
    let o = cli(kc, &["plan", "-o", "json"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

/// A bare meshed pod, a copy of one of web's pods without owner: nothing recreates it.
async fn create_bare_pod(client: &kube::Client, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
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
    spec.node_name = None;
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
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

async fn create_job(client: &kube::Client, name: &str) {
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": {"app": name}, "annotations": {"config.linkerd.io/proxy-enable-native-sidecar": "true"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "backfill", "image": "registry.sim/backfill:v1", "command": ["sh", "-c", "sleep 600"]}]},
        }},
    }))
    .unwrap();
    Api::<Job>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &job)
        .await
        .expect("job created");
}

/// Waits until the meshed pods of `label` exist (the injector meshed them).
async fn wait_meshed(client: &kube::Client, label: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    for _ in 0..300 {
        let pods = api
            .list(&ListParams::default().labels(label))
            .await
            .expect("pods");
        if let Some(p) = pods.items.iter().find(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("linkerd.io/control-plane-ns"))
        }) {
            return p.metadata.name.clone().unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no meshed pod with {label}");
}

async fn set_budget(client: &kube::Client, max_unavailable: i32) {
    Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
        .patch(
            "vote-store",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxUnavailable": max_unavailable}})),
        )
        .await
        .expect("PDB patched");
}

const ORDER: [&str; 6] = [
    "emojivoto/daemonset/node-agent",
    "emojivoto/deployment/emoji",
    "emojivoto/deployment/vote-bot",
    "emojivoto/deployment/voting",
    "emojivoto/deployment/web",
    "emojivoto/statefulset/vote-store",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_names_every_workload_in_order_and_the_operator_follows_it() {
    let rotating::Rotating { sim, operator, .. } =
        rotating::start_with(Topology::DemoAllKinds, true).await;
    let client = sim.client();
    let kc = sim.kubeconfig_path().to_path_buf();
    Api::<TrustAnchorRotation>::all(client.clone())
        .patch(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"automation": {
                "issuerRenewal": "Automatic", "workloadRestarts": "Automatic"}}})),
        )
        .await
        .expect("automation on");
    wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.trust_bundle.is_some()
    })
    .await;

    // What a person must handle: a budget that never allows a disruption, a bare pod, a
    // Job's pod.
    set_budget(&client, 0).await;
    create_bare_pod(&client, "debug-shell").await;
    create_job(&client, "backfill").await;
    let job_pod = wait_meshed(&client, "linkerd.io/proxy-job=backfill").await;
    // The budget's controller has seen the change (disruptionsAllowed 0).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let o = cli(&kc, &["plan"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let text = o.stdout;
    eprintln!("{text}");
    assert!(
        text.contains("In progress:         none (Synced): this is the plan for the next rotation"),
        "{text}"
    );
    assert!(
        text.contains(
            "Issuer renewal:      by the operator, once every meshed pod trusts the new anchor"
        ),
        "{text}"
    );
    assert!(
        text.contains("Workload restarts:   Automatic, 1 at a time, in the order below"),
        "{text}"
    );
    assert!(
        text.contains("Maintenance window:  none configured: the operator may act at any time"),
        "{text}"
    );
    // The workloads, in the operator's order, with their strategy and replicas; vote-store,
    // which the operator skips, last.
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("# "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    let got: Vec<(&str, &str, &str, &str, &str)> = rows
        .iter()
        .map(|r| (r[0], r[1], r[2], r[3], r[4]))
        .collect();
    assert_eq!(
        got,
        [
            (
                "1",
                "daemonset",
                "emojivoto/node-agent",
                "RollingUpdate maxUnavailable=1 maxSurge=0",
                "3"
            ),
            (
                "2",
                "deployment",
                "emojivoto/emoji",
                "RollingUpdate maxUnavailable=25% maxSurge=25%",
                "1"
            ),
            (
                "3",
                "deployment",
                "emojivoto/vote-bot",
                "RollingUpdate maxUnavailable=25% maxSurge=25%",
                "1"
            ),
            (
                "4",
                "deployment",
                "emojivoto/voting",
                "RollingUpdate maxUnavailable=25% maxSurge=25%",
                "1"
            ),
            (
                "5",
                "deployment",
                "emojivoto/web",
                "RollingUpdate maxUnavailable=25% maxSurge=25%",
                "1"
            ),
            (
                "-",
                "statefulset",
                "emojivoto/vote-store",
                "RollingUpdate partition=0 maxUnavailable=1",
                "2"
            ),
        ],
        "{text}"
    );
    let vote_store = rows.last().unwrap();
    assert_eq!(vote_store[5], "none ever", "{text}");
    assert!(
        vote_store.last().unwrap().starts_with(
            "skipped: PodDisruptionBudget vote-store allows no disruption (maxUnavailable: 0)"
        ),
        "{text}"
    );
    // A Deployment's last rollout is known (the simulator's NewReplicaSetAvailable time).
    assert!(rows[1][6] != "-", "{text}");
    // What a person must do, with the exact command.
    let person: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "What a person must do")
        .collect();
    let has = |kind: &str, target: &str, cmd: &str| {
        person
            .iter()
            .any(|l| l.starts_with(kind) && l.contains(target) && l.ends_with(cmd))
    };
    assert!(
        has(
            "budget-never-allows",
            "emojivoto/statefulset/vote-store",
            "kubectl -n emojivoto rollout restart statefulset/vote-store (when a disruption is acceptable; the budget does not stop a rollout, the operator honours it)"
        ),
        "{text}"
    );
    assert!(
        has(
            "bare-pod",
            "emojivoto/debug-shell",
            "kubectl -n emojivoto delete pod debug-shell (a bare pod: nothing recreates it)"
        ),
        "{text}"
    );
    assert!(
        has(
            "job-pod",
            &format!("emojivoto/{job_pod}"),
            "wait for Job backfill to finish (or kubectl -n emojivoto delete job backfill)"
        ),
        "{text}"
    );
    assert!(text.contains("\nEstimated duration: "), "{text}");
    assert!(
        text.contains("  - every workload is restarted three times, once in each of AwaitPropagation, AccelerateRefresh, AwaitPropagationReduced"),
        "{text}"
    );

    // The JSON says the same.
    let plan = plan_json(&kc).await;
    eprintln!("{}", serde_json::to_string_pretty(&plan).unwrap());
    assert_eq!(plan.rotation, "cluster");
    assert!(plan.in_progress.is_none());
    assert_eq!(plan.workload_restarts, "Automatic");
    let names: Vec<&str> = plan.workloads.iter().map(|w| w.workload.as_str()).collect();
    assert_eq!(names, ORDER);
    assert_eq!(
        trust_rotation_steps::plan::operator_order(&plan),
        ORDER[..5]
    );
    let vs = &plan.workloads[5];
    assert_eq!(vs.restart_by, RestartBy::Skipped);
    assert_eq!(vs.order, None);
    assert!(vs
        .budget
        .as_ref()
        .is_some_and(|b| b.never && b.name == "vote-store"));
    assert_eq!(plan.workloads[0].replicas, Some(3));
    assert_eq!(plan.workloads[0].order, Some(1));
    let kinds: Vec<&str> = plan.person.iter().map(|a| a.kind.as_str()).collect();
    for k in ["budget-never-allows", "bare-pod", "job-pod"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    assert!(plan.anchor.fingerprint.is_some() && plan.anchor.renewal_time.is_some());
    assert!(plan.estimate.seconds > plan.estimate.workload_restart_seconds);
    assert_eq!(plan.estimate.batches_per_step, 5);
    // The raw document has the documented keys.
    let raw: serde_json::Value =
        serde_json::from_str(&cli(&kc, &["plan", "-o", "json"]).await.stdout).unwrap();
    let mut keys: Vec<&str> = raw
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "anchor",
            "approvals",
            "estimate",
            "generatedAt",
            "inProgress",
            "issuer",
            "maxConcurrentWorkloads",
            "person",
            "rotation",
            "schedule",
            "workloadRestarts",
            "workloads"
        ]
    );

    // The key promise: what the operator restarts, and in which order, is the plan. A person
    // takes the bare pod and the Job away and lets the budget allow a disruption first, so the
    // operator has every workload to restart.
    Api::<Pod>::namespaced(client.clone(), NS)
        .delete("debug-shell", &DeleteParams::default())
        .await
        .expect("bare pod deleted");
    Api::<Job>::namespaced(client.clone(), NS)
        .delete("backfill", &DeleteParams::background())
        .await
        .expect("job deleted");
    set_budget(&client, 1).await;
    let deadline = tokio::time::Instant::now() + T;
    let plan = loop {
        let p = plan_json(&kc).await;
        if p.person.iter().all(|a| a.kind == "cronjob-pod")
            && trust_rotation_steps::plan::operator_order(&p) == ORDER
        {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "{p:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let planned = trust_rotation_steps::plan::operator_order(&plan);

    // Every workload as it first shows Restarting, per step, from a watch on the status.
    let seen: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let recorder = {
        let seen = seen.clone();
        let api: Api<TrustAnchorRotation> = Api::all(client.clone());
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(tar)) = stream.next().await {
                let mut seen = seen.lock().unwrap();
                for r in tar.status.iter().flat_map(|s| s.workload_restarts.iter()) {
                    if r.state == WorkloadRestartState::Pending {
                        continue;
                    }
                    let order = seen.entry(r.step.clone()).or_default();
                    if !order.contains(&r.workload) {
                        order.push(r.workload.clone());
                    }
                }
            }
        })
    };
    let o = cli(&kc, &["renew", "anchor"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);

    // Mid-rotation, the plan shows the rotation and each workload's progress, and status
    // shows the restarts against it.
    let s = wait_status(&client, "restarts under way", T, |s| {
        s.workload_restarts
            .iter()
            .any(|r| r.state == WorkloadRestartState::Restarted)
            && s.current_step.as_deref() == Some("AwaitPropagation")
    })
    .await;
    let line = cli(&kc, &["status"]).await.stdout;
    let id = s
        .rotation
        .as_ref()
        .map(|r| r.id.clone())
        .unwrap_or_default();
    // (The step may have moved on between the two reads; while it is AwaitPropagation the line
    // counts its restarts.)
    if line.contains("step AwaitPropagation ") {
        let re = regex::Regex::new(r"  restarts [1-6]/6( \(|$)").unwrap();
        assert!(re.is_match(line.trim_end()), "{line}");
    }
    let mid = plan_json(&kc).await;
    let r = mid
        .in_progress
        .as_ref()
        .expect("the rotation is in progress");
    assert_eq!(r.id, id);
    assert!(
        mid.workloads
            .iter()
            .any(|w| w.progress.iter().any(|p| p.step == "AwaitPropagation")),
        "{mid:#?}"
    );
    let table = cli(&kc, &["plan"]).await.stdout;
    eprintln!("{table}");
    eprintln!("{line}");
    assert!(
        table.contains("PROGRESS") && table.contains(&format!("In progress:         {id} phase ")),
        "{table}"
    );

    let s = wait_status(&client, "Synced with no further command", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none() && !s.history.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    for step in ["AwaitPropagation", "AwaitPropagationReduced"] {
        assert_eq!(
            seen.get(step).cloned().unwrap_or_default(),
            planned,
            "{step}: the operator's order is the plan's ({seen:#?})"
        );
    }
    // AccelerateRefresh restarts those whose pods still hold the old issuer's certificate: in
    // the plan's order too.
    let refreshed = seen.get("AccelerateRefresh").cloned().unwrap_or_default();
    let expected: Vec<String> = planned
        .iter()
        .filter(|w| refreshed.contains(w))
        .cloned()
        .collect();
    assert_eq!(refreshed, expected, "{seen:#?}");
    // And the status agrees: every planned workload restarted in both bundle steps.
    for step in ["AwaitPropagation", "AwaitPropagationReduced"] {
        let mut got: Vec<&str> = s
            .workload_restarts
            .iter()
            .filter(|r| r.step == step && r.state == WorkloadRestartState::Restarted)
            .map(|r| r.workload.as_str())
            .collect();
        got.sort();
        assert_eq!(got, planned, "{step}");
    }

    operator.abort();
    sim.shutdown().await;
}

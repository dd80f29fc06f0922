//! How fast the simulator replaces pods in a `kubectl rollout restart` storm: starts the mesh
//! as the rotation bench does (`demo-all-kinds` plus N meshed pods), restarts every
//! Deployment, StatefulSet and DaemonSet at once (the annotation `kubectl rollout restart`
//! sets), and times until every pod they had is gone and the mesh has converged again.
//!
//! `cargo run --release -p cluster-sim --example restart_storm -- 1000 5000 10000`
//! (`RESTART_STORM_BUDGET=300` seconds per size; a size that does not finish reports how many
//! pods it replaced in that time).

#![forbid(unsafe_code)]

use cluster_sim::mesh::{self, Durations, MeshConfig, Topology};
use cluster_sim::store::{ResourceKey, Store};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn child(pods: usize, budget: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = Store::new();
        let cfg = MeshConfig {
            topology: Topology::DemoAllKinds,
            pods,
            durations: Durations::demo(),
            seed: 1,
            ..Default::default()
        };
        let started = Instant::now();
        let m = mesh::install(&store, &cfg)?;
        m.converged(Duration::from_secs(1200)).await?;
        let startup = started.elapsed();
        let pods_key = ResourceKey::new("", "pods");
        let workload_pod = |p: &serde_json::Value| {
            matches!(
                p["metadata"]["ownerReferences"][0]["kind"].as_str(),
                Some("ReplicaSet" | "StatefulSet" | "DaemonSet")
            )
        };
        let old: HashSet<String> = store
            .list(&pods_key, None)
            .0
            .iter()
            .filter(|p| workload_pod(p))
            .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        let total = old.len();
        let rv0 = store.resource_version();
        let t = Instant::now();
        let at = jiff::Timestamp::now().to_string();
        for (g, plural) in [
            ("apps", "deployments"),
            ("apps", "statefulsets"),
            ("apps", "daemonsets"),
        ] {
            let k = ResourceKey::new(g, plural);
            for w in store.list(&k, None).0 {
                let ns = w["metadata"]["namespace"].as_str().unwrap_or("");
                let name = w["metadata"]["name"].as_str().unwrap_or("");
                store.mutate(&k, Some(ns), name, |o| {
                    o["spec"]["template"]["metadata"]["annotations"]
                        ["kubectl.kubernetes.io/restartedAt"] = json!(at);
                    Ok(())
                })?;
            }
        }
        let mut replaced;
        let mut last_print = Instant::now();
        let done = loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let live: HashSet<String> = store
                .list(&pods_key, None)
                .0
                .iter()
                .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
                .collect();
            replaced = old.iter().filter(|u| !live.contains(*u)).count();
            if last_print.elapsed() > Duration::from_secs(10) {
                last_print = Instant::now();
                eprintln!(
                    "  {pods}: {replaced}/{total} replaced after {:.0} s",
                    t.elapsed().as_secs_f64()
                );
            }
            if replaced == total && m.converged(Duration::ZERO).await.is_ok() {
                break true;
            }
            if t.elapsed() > budget {
                break false;
            }
        };
        let secs = t.elapsed().as_secs_f64();
        println!(
            "restart_storm pods={pods} workload_pods={total} startup_s={:.1} finished={done} replaced={replaced} restart_s={secs:.1} pods_per_s={:.1} store_writes={}",
            startup.as_secs_f64(),
            replaced as f64 / secs,
            store.resource_version() - rv0,
        );
        m.shutdown().await;
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let budget = Duration::from_secs(
        std::env::var("RESTART_STORM_BUDGET")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    if let Ok(n) = std::env::var("RESTART_STORM_CHILD_PODS") {
        return child(n.parse()?, budget);
    }
    let sizes: Vec<String> = std::env::args().skip(1).collect();
    let sizes = if sizes.is_empty() {
        vec!["1000".to_string()]
    } else {
        sizes
    };
    for size in sizes {
        let status = std::process::Command::new(std::env::current_exe()?)
            .env("RESTART_STORM_CHILD_PODS", size.trim())
            .status()?;
        if !status.success() {
            anyhow::bail!("the {size}-pod run failed: {status}");
        }
    }
    Ok(())
}

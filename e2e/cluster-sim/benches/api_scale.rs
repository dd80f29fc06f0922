//! API server at scale (`make bench`): 50,000 pods held, full and paged lists of 10,000
//! pods, and a watch fan-out of 20 watchers while 10,000 pods change. Prints the figures;
//! asserts nothing about time (this machine's load varies), only that every watcher saw
//! every event.

use cluster_sim::api::{builtin, tls, ApiServer};
use cluster_sim::store::{ResourceKey, Store};
use cluster_sim::FaultConfig;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde_json::json;
use std::time::{Duration, Instant};

const NAMESPACES: usize = 5;
const PODS_PER_NAMESPACE: usize = 10_000;
const WATCHERS: usize = 20;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn pod(ns: &str, i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("web-{i:05}"), "namespace": ns,
            "labels": {"app": "web", "shard": (i % 10).to_string(), "linkerd.io/control-plane-ns": "linkerd"},
            "annotations": {"linkerd.io/trust-root-sha256": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"},
        },
        "spec": {"serviceAccountName": "web", "containers": [
            {"name": "app", "image": "example/web:1", "ports": [{"containerPort": 8080}]},
            {"name": "linkerd-proxy", "image": "cr.l5d.io/linkerd/proxy:stable", "env": [
                {"name": "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", "value": "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"},
                {"name": "LINKERD2_PROXY_IDENTITY_DIR", "value": "/var/run/linkerd/identity/end-entity"}
            ]}
        ]},
        "status": {"phase": "Running", "podIP": format!("127.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, 1 + i % 250)},
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let store = Store::new();
    builtin::install(&store)?;
    let server = ApiServer::start(
        store.clone(),
        "127.0.0.1:0".parse()?,
        FaultConfig::default(),
        1,
    )
    .await?;
    let yaml = tls::kubeconfig_yaml(server.addr(), server.credentials());
    let kc = kube::config::Kubeconfig::from_yaml(&yaml)?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    config.read_timeout = Some(Duration::from_secs(300));
    let client = kube::Client::try_from(config)?;

    let rss0 = rss_mib();
    let pods_key = ResourceKey::new("", "pods");
    let ns_key = ResourceKey::new("", "namespaces");
    let t = Instant::now();
    for n in 0..NAMESPACES {
        let ns = format!("bench-{n}");
        store.create(&ns_key, builtin::new_namespace(&ns))?;
        for i in 0..PODS_PER_NAMESPACE {
            store.create(&pods_key, pod(&ns, i))?;
        }
    }
    let total = NAMESPACES * PODS_PER_NAMESPACE;
    let load = t.elapsed();
    println!(
        "api_scale: stored {total} pods in {:.2}s ({:.0} creates/s); RSS {:.0} MiB -> {:.0} MiB",
        load.as_secs_f64(),
        total as f64 / load.as_secs_f64(),
        rss0,
        rss_mib()
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench-0");
    let mut full = Vec::new();
    let mut bytes = 0usize;
    for _ in 0..5 {
        let t = Instant::now();
        let l = pods.list(&ListParams::default()).await?;
        full.push(t.elapsed());
        assert_eq!(l.items.len(), PODS_PER_NAMESPACE);
        bytes = serde_json::to_vec(&l)?.len();
    }
    println!("api_scale: full list of {PODS_PER_NAMESPACE} pods (~{:.1} MB JSON): median {:.0} ms over 5 (client decode included)",
        bytes as f64 / 1e6, median(full).as_secs_f64() * 1e3);

    let mut paged = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut n = 0;
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(500);
            if let Some(c) = &token {
                lp = lp.continue_token(c);
            }
            let page = pods.list(&lp).await?;
            n += page.items.len();
            token = page.metadata.continue_.filter(|c| !c.is_empty());
            if token.is_none() {
                break;
            }
        }
        assert_eq!(n, PODS_PER_NAMESPACE);
        paged.push(t.elapsed());
    }
    println!(
        "api_scale: paged list (limit=500) of {PODS_PER_NAMESPACE} pods: median {:.0} ms",
        median(paged).as_secs_f64() * 1e3
    );

    let t = Instant::now();
    let selected = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels("shard in (1,2)"))
        .await?;
    println!(
        "api_scale: label-selected list across all {total} pods ({} match): {:.0} ms",
        selected.items.len(),
        t.elapsed().as_secs_f64() * 1e3
    );

    // Watch fan-out: 20 watchers on every pod, 10,000 pods change.
    let rv = store.resource_version().to_string();
    let all: Api<Pod> = Api::all(client.clone());
    let mut tasks = Vec::new();
    let changes = PODS_PER_NAMESPACE;
    for _ in 0..WATCHERS {
        let stream = all.watch(&WatchParams::default().timeout(290), &rv).await?;
        tasks.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut seen = 0usize;
            while let Some(ev) = stream.next().await {
                if let Ok(WatchEvent::Modified(_)) = ev {
                    seen += 1;
                    if seen == changes {
                        return (seen, Instant::now());
                    }
                }
            }
            (seen, Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    for i in 0..changes {
        store.mutate(&pods_key, Some("bench-1"), &format!("web-{i:05}"), |p| {
            p["status"]["phase"] = json!("Succeeded");
            Ok(())
        })?;
    }
    let written = t.elapsed();
    let mut last = t;
    for task in tasks {
        let (seen, at) = task.await?;
        assert_eq!(seen, changes, "a watcher missed events");
        last = last.max(at);
    }
    let delivered = last.duration_since(t);
    println!("api_scale: {changes} updates written in {:.0} ms; all {WATCHERS} watchers received all {} events within {:.0} ms ({:.0} events/s delivered in total)",
        written.as_secs_f64() * 1e3, changes, delivered.as_secs_f64() * 1e3,
        (changes * WATCHERS) as f64 / delivered.as_secs_f64());
    println!("api_scale: RSS at end {:.0} MiB", rss_mib());
    server.shutdown().await;
    Ok(())
}

//! Start-up time and memory of the simulated mesh at 1,000 and 10,000 meshed pods (plus the
//! demo topology), and what one oracle evaluation costs at that size. Each size runs in its
//! own child process so memory figures do not mix. `cargo bench -p cluster-sim --bench
//! mesh_scale` (what `make bench` runs); `MESH_BENCH_SIZES=1000` picks sizes.

#![forbid(unsafe_code)]

use cluster_sim::mesh::{self, Durations, MeshConfig, Topology};
use cluster_sim::store::Store;
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn child(pods: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let base_rss = rss_kib();
        let store = Store::new();
        let cfg = MeshConfig { topology: Topology::Demo, pods, durations: Durations::demo(), seed: 1, ..Default::default() };
        let started = Instant::now();
        let m = mesh::install(&store, &cfg)?;
        m.converged(Duration::from_secs(600)).await?;
        let startup = started.elapsed();
        let rss = rss_kib();
        let t = Instant::now();
        let evals = 5;
        let mut snap = m.oracle().sample();
        for _ in 1..evals {
            snap = m.oracle().sample();
        }
        let oracle = t.elapsed() / evals;
        println!(
            "mesh_scale pods={pods} meshed_total={} startup_s={:.2} rss_mib={:.1} rss_per_pod_kib={:.1} open_fds={} oracle_eval_ms={:.2} oracle_classes={} mtls_ok_ratio={} store_writes={}",
            snap.certified_pods,
            startup.as_secs_f64(),
            (rss.saturating_sub(base_rss)) as f64 / 1024.0,
            (rss.saturating_sub(base_rss)) as f64 / snap.certified_pods.max(1) as f64,
            open_fds(),
            oracle.as_secs_f64() * 1000.0,
            snap.classes,
            snap.ratio,
            store.resource_version(),
        );
        m.shutdown().await;
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; a child gets its size in the environment.
    if let Ok(n) = std::env::var("MESH_BENCH_CHILD_PODS") {
        return child(n.parse()?);
    }
    // Without `--bench` (e.g. `cargo test --benches`) only a smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let default = if benching { "1000,10000" } else { "100" };
    let sizes = std::env::var("MESH_BENCH_SIZES").unwrap_or_else(|_| default.into());
    for size in sizes.split(',').filter(|s| !s.trim().is_empty()) {
        let status = std::process::Command::new(std::env::current_exe()?)
            .env("MESH_BENCH_CHILD_PODS", size.trim())
            .status()?;
        if !status.success() {
            anyhow::bail!("the {size}-pod run failed: {status}");
        }
    }
    Ok(())
}

//! `make bench`: `linkerd trust inspect` over many meshed pods on the simulator, against the
//! ideal and against a kubectl-and-jq script doing the same bundle check.
//!
//! Every API request, port-forwards included, gets a simulated latency L, so one probe costs at
//! least L; with concurrency C the ideal inspect is `list time + pods × L / C`. Goal: within
//! 1.25× of the ideal.
//!
//! The simulated cluster (API server, kubelet port-forwards, one TLS server per proxy) runs on
//! the same cores as the CLI, so the bench also reports the CPU both spent: when their sum
//! divided by the cores exceeds the ideal, the rig is CPU-bound and the ratio measures the
//! machine, not the fan-out. Each latency in the sweep is one row.
//!
//! Knobs (env): `INSPECT_BENCH_PODS` (default 10000), `INSPECT_BENCH_LATENCY_MS` (a
//! comma-separated sweep, default `20,50,100`), `INSPECT_BENCH_CONCURRENCY` (default 50).
//!
//! Run: `cargo bench -p linkerd-trust --bench inspect`.

use cluster_sim::mesh::{Durations, Topology};
use cluster_sim::{FaultConfig, Sim, SimConfig};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_linkerd-trust");

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn latencies() -> Vec<Duration> {
    let spec = std::env::var("INSPECT_BENCH_LATENCY_MS").unwrap_or_else(|_| "20,50,100".into());
    spec.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .map(Duration::from_millis)
        .collect()
}

/// CPU seconds used so far by this process (the simulator runs in it) and by its reaped
/// children (the CLI runs), from `/proc/self/stat` (Linux; zeros elsewhere).
fn cpu() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the parenthesised command name; utime is field 14 of the whole line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0; // USER_HZ, what /proc reports in on Linux
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / tick;
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    (at(11) + at(12), at(13) + at(14))
}

struct Run {
    wall: Duration,
    cli_cpu: f64,
    sim_cpu: f64,
    stdout: String,
}

async fn run(kubeconfig: &std::path::Path, args: &[&str]) -> anyhow::Result<Run> {
    let (sim0, cli0) = cpu();
    let t = Instant::now();
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await?;
    let wall = t.elapsed();
    let (sim1, cli1) = cpu();
    anyhow::ensure!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Run {
        wall,
        cli_cpu: cli1 - cli0,
        sim_cpu: sim1 - sim0,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

fn main() -> anyhow::Result<()> {
    // The simulator's listener helpers (meshes beyond one process's open-file limit) run
    // this same executable.
    cluster_sim::mesh::listeners::serve_helper_if_asked();
    let pods = env_num("INSPECT_BENCH_PODS", 10_000) as usize;
    let concurrency = env_num("INSPECT_BENCH_CONCURRENCY", 50);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        eprintln!("starting the simulator with {pods} extra meshed pods...");
        // Real-world durations: 24h certificates, as in a cluster being inspected. The demo's
        // seconds-long certificates would have 10,000 proxies renewing all the time, and the
        // simulated identity controller's signing would dwarf what is being measured.
        let sim = Sim::start(SimConfig {
            topology: Topology::Demo,
            durations: Durations::real(),
            pods,
            listeners: cluster_sim::mesh::listeners::ListenerConfig::helpers_from_this_executable(),
            ..SimConfig::default()
        })
        .await?;
        let kc = sim.kubeconfig_path().to_path_buf();
        let c = concurrency.to_string();

        println!(
            "inspect benchmark: concurrency {concurrency}, {cores} cores shared by the CLI and the simulated cluster"
        );
        let mut workloads = 0;
        for latency in latencies() {
            sim.faults().set(FaultConfig {
                latency,
                ..FaultConfig::default()
            });
            // The list alone (what every approach pays once).
            let t = Instant::now();
            let listed =
                trust_rotation_steps::observe::list_meshed_pods(&sim.client(), "linkerd").await?;
            let list_time = t.elapsed();
            workloads = listed.iter().filter(|p| p.is_workload()).count();

            let probe = run(
                &kc,
                &["inspect", "-o", "json", "--concurrency", &c, "--timeout", "60s"],
            )
            .await?;
            let report: serde_json::Value = serde_json::from_str(&probe.stdout)?;
            let probed = &report["observed"]["workloadCertificates"];
            anyhow::ensure!(
                probed["target"].as_u64() == Some(workloads as u64)
                    && probed["converged"].as_u64() == Some(workloads as u64),
                "inspect judged {probed} of {workloads} workload pods"
            );
            let ideal = list_time + latency.mul_f64(workloads as f64 / concurrency as f64);
            let ratio = probe.wall.as_secs_f64() / ideal.as_secs_f64();
            let cpu_floor = (probe.cli_cpu + probe.sim_cpu) / cores as f64;
            println!(
                "  latency {:>4}ms, {workloads} pods: inspect {:.2}s, ideal {:.2}s (list {:.2}s) -> {ratio:.2}x (goal <= 1.25x: {})",
                latency.as_millis(),
                probe.wall.as_secs_f64(),
                ideal.as_secs_f64(),
                list_time.as_secs_f64(),
                if ratio <= 1.25 { "met" } else { "missed" },
            );
            println!(
                "      CPU: CLI {:.2}s ({:.0}us per pod), simulator {:.2}s; all of it on {cores} cores takes at least {cpu_floor:.2}s{}",
                probe.cli_cpu,
                probe.cli_cpu * 1e6 / workloads.max(1) as f64,
                probe.sim_cpu,
                if cpu_floor > ideal.as_secs_f64() {
                    " (more than the ideal: CPU-bound rig)"
                } else {
                    ""
                },
            );
        }
        sim.faults().set(FaultConfig::default());

        let direct = run(
            &kc,
            &["inspect", "-o", "json", "--probe", "direct", "--concurrency", &c],
        )
        .await?;
        let bundle = run(&kc, &["inspect", "--no-probe", "-o", "json"]).await?;
        let script = r#"sha=$(kubectl -n linkerd get cm linkerd-identity-trust-roots -o json | jq -j '.data["ca-bundle.crt"]' | sha256sum | cut -d' ' -f1)
kubectl get pods -A -l linkerd.io/control-plane-ns=linkerd -o json \
  | jq --arg sha "$sha" '[.items[] | select(.metadata.namespace != "linkerd") | select(.metadata.annotations["linkerd.io/trust-root-sha256"] != $sha)] | length'"#;
        let t = Instant::now();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("KUBECONFIG", &kc)
            .output();
        let script_time = t.elapsed();
        let script_note = match out {
            Ok(o) if o.status.success() => format!(
                "{:.2}s (found {} stale)",
                script_time.as_secs_f64(),
                String::from_utf8_lossy(&o.stdout).trim()
            ),
            Ok(o) => format!("failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => format!("not run ({e})"),
        };
        println!("  without API latency, {workloads} pods:");
        println!(
            "    inspect --probe direct:     {:.2}s (CLI CPU {:.2}s)",
            direct.wall.as_secs_f64(),
            direct.cli_cpu
        );
        println!(
            "    inspect --no-probe:         {:.2}s (bundle state only)",
            bundle.wall.as_secs_f64()
        );
        println!("    kubectl + jq bundle check:  {script_note}");
        sim.shutdown().await;
        Ok(())
    })
}

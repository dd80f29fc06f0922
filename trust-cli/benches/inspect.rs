//! `make bench`: `linkerd trust inspect` over many meshed pods on the simulator, against the
//! ideal and against a kubectl-and-jq script doing the same bundle check.
//!
//! Every API request, port-forwards included, gets a simulated latency L, so one probe costs at
//! least L; with concurrency C the ideal inspect is `list time + pods × L / C`. Goal: within
//! 1.25× of the ideal. Knobs (env): `INSPECT_BENCH_PODS` (default 10000),
//! `INSPECT_BENCH_LATENCY_MS` (default 20), `INSPECT_BENCH_CONCURRENCY` (default 50).
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

fn main() -> anyhow::Result<()> {
    let pods = env_num("INSPECT_BENCH_PODS", 10_000) as usize;
    let latency = Duration::from_millis(env_num("INSPECT_BENCH_LATENCY_MS", 20));
    let concurrency = env_num("INSPECT_BENCH_CONCURRENCY", 50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        eprintln!("starting the simulator with {pods} extra meshed pods...");
        let sim = Sim::start(SimConfig {
            topology: Topology::Demo,
            durations: Durations::fast(),
            pods,
            ..SimConfig::default()
        })
        .await?;
        let kc = sim.kubeconfig_path().to_path_buf();
        sim.faults().set(FaultConfig {
            latency,
            ..FaultConfig::default()
        });

        // The list alone (what every approach pays once).
        let t = Instant::now();
        let listed = trust_rotation_steps::observe::list_meshed_pods(&sim.client(), "linkerd").await?;
        let list_time = t.elapsed();
        let workloads = listed.iter().filter(|p| p.is_workload()).count();

        let run = |args: Vec<String>| {
            let kc = kc.clone();
            async move {
                let t = Instant::now();
                let out = tokio::process::Command::new(BIN)
                    .args(&args)
                    .env("KUBECONFIG", &kc)
                    .output()
                    .await?;
                anyhow::ensure!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
                Ok::<_, anyhow::Error>((t.elapsed(), String::from_utf8_lossy(&out.stdout).into_owned()))
            }
        };
        let (probe_time, json) = run(vec![
            "inspect".into(),
            "-o".into(),
            "json".into(),
            "--concurrency".into(),
            concurrency.to_string(),
            "--timeout".into(),
            "60s".into(),
        ])
        .await?;
        let report: serde_json::Value = serde_json::from_str(&json)?;
        let probed = &report["observed"]["workloadCertificates"];
        anyhow::ensure!(
            probed["target"].as_u64() == Some(workloads as u64),
            "inspect judged {probed} of {workloads} workload pods"
        );
        let ideal = list_time + latency.mul_f64(workloads as f64 / concurrency as f64);
        let ratio = probe_time.as_secs_f64() / ideal.as_secs_f64();

        let (direct_time, _) = run(vec![
            "inspect".into(),
            "-o".into(),
            "json".into(),
            "--probe".into(),
            "direct".into(),
            "--concurrency".into(),
            concurrency.to_string(),
        ])
        .await?;
        let (bundle_time, _) = run(vec!["inspect".into(), "--no-probe".into(), "-o".into(), "json".into()]).await?;
        let script = r#"sha=$(kubectl -n linkerd get cm linkerd-identity-trust-roots -o json | jq -j '.data["ca-bundle.crt"]' | sha256sum | cut -d' ' -f1)
kubectl get pods -A -l linkerd.io/control-plane-ns=linkerd -o json \
  | jq --arg sha "$sha" '[.items[] | select(.metadata.namespace != "linkerd") | select(.metadata.annotations["linkerd.io/trust-root-sha256"] != $sha)] | length'"#;
        let t = Instant::now();
        let out = std::process::Command::new("sh").arg("-c").arg(script).env("KUBECONFIG", &kc).output();
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

        println!("inspect benchmark: {workloads} workload pods, latency {latency:?}, concurrency {concurrency}");
        println!("  list:                       {:.2}s", list_time.as_secs_f64());
        println!("  inspect (probing):          {:.2}s", probe_time.as_secs_f64());
        println!("  ideal (list + N*L/C):       {:.2}s", ideal.as_secs_f64());
        println!("  ratio to ideal:             {ratio:.2}x (goal <= 1.25x)");
        println!("  inspect --probe direct:     {:.2}s (no API latency per probe)", direct_time.as_secs_f64());
        println!("  inspect --no-probe:         {:.2}s", bundle_time.as_secs_f64());
        println!("  kubectl + jq bundle check:  {script_note}");
        sim.shutdown().await;
        Ok(())
    })
}

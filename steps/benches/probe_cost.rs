//! What a waiting step costs the mesh in probes: the simulator's demo topology plus
//! `PROBE_COST_PODS` meshed pods (default 10,000), every proxy on the active issuer but one
//! that cannot be reached (its admin port is closed, as for a proxy that hangs). The bench
//! looks as AccelerateRefresh and ReduceBundle do while they wait, through the same
//! [`ProbeCache`], every 2 s (their poll interval) for `PROBE_COST_SECS` (default 60), and
//! prints how many proxies it probed: on the first look, and per minute while it waits.
//! Without the cache every look probed every unconverged pod (AccelerateRefresh) or every
//! proxy (ReduceBundle): the `without_cache` figure.
//!
//! `cargo bench -p trust-rotation-steps --bench probe_cost` (what `make bench` runs).

#![forbid(unsafe_code)]

use cluster_sim::mesh::{Durations, Topology};
use cluster_sim::{Sim, SimConfig};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use std::time::{Duration, Instant};
use trust_rotation_steps::convergence::{cert_state, CertState};
use trust_rotation_steps::observe::list_meshed_pods;
use trust_rotation_steps::pki::parse_pem_certificate;
use trust_rotation_steps::probe::{ProbeConfig, ProbeMode, ProbeOutcome};
use trust_rotation_steps::probe_cache::{look, Backoff, ProbeCache};

const POLL: Duration = Duration::from_secs(2);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let pods = env_or("PROBE_COST_PODS", 10_000) as usize;
    let window = Duration::from_secs(env_or("PROBE_COST_SECS", 60));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let started = Instant::now();
        let sim = Sim::start(SimConfig {
            topology: Topology::Demo,
            pods,
            // Certificates outlive the bench: answers change only where the bench says.
            durations: Durations {
                workload_cert_lifetime: Duration::from_secs(3600),
                ..Durations::demo()
            },
            ..SimConfig::default()
        })
        .await?;
        let client = sim.client();
        let mut meshed: Vec<_> = list_meshed_pods(&client, "linkerd")
            .await?
            .into_iter()
            .filter(|p| p.is_workload())
            .collect();
        let setup = started.elapsed();
        // The one stuck proxy: nothing listens where it would be probed.
        let stuck = meshed.last_mut().expect("meshed pods");
        stuck.admin_port = 1;
        let stuck_name = stuck.pod.to_string();
        let issuer = {
            let s = Api::<Secret>::namespaced(client.clone(), "linkerd")
                .get("linkerd-identity-issuer")
                .await?;
            let crt = s
                .data
                .and_then(|mut d| d.remove("tls.crt"))
                .expect("issuer tls.crt");
            parse_pem_certificate(std::str::from_utf8(&crt.0)?)?
        };
        let cfg = ProbeConfig {
            mode: ProbeMode::Direct,
            concurrency: 50,
            timeout: Duration::from_secs(2),
            trust_domain: "cluster.local".into(),
            linkerd_ns: "linkerd".into(),
        };
        let cache = ProbeCache::default();
        let backoff = Backoff::for_refresh_interval(POLL, "5m");
        let settled = |o: &ProbeOutcome| cert_state(o, &issuer) == CertState::Active;

        let t = Instant::now();
        let first_look = look(&client, &cfg, &cache, meshed.clone(), settled, backoff).await;
        let first = first_look.probed();
        let answers = first_look.answers();
        let first_s = t.elapsed().as_secs_f64();
        let active = answers
            .iter()
            .filter(|(_, o)| cert_state(o, &issuer) == CertState::Active)
            .count();
        anyhow::ensure!(
            active + 1 == meshed.len(),
            "every proxy but the stuck one should be on the active issuer: {active} of {}",
            meshed.len()
        );

        let t = Instant::now();
        let (mut looks, mut probes) = (0u64, 0u64);
        while t.elapsed() < window {
            let next = Instant::now() + POLL;
            let this_look = look(&client, &cfg, &cache, meshed.clone(), settled, backoff).await;
            let probed = this_look.probed();
            let answers = this_look.answers();
            anyhow::ensure!(
                answers.len() == meshed.len(),
                "a look answers for every pod"
            );
            looks += 1;
            probes += probed as u64;
            tokio::time::sleep_until(next.into()).await;
        }
        let per_minute = probes as f64 * 60.0 / t.elapsed().as_secs_f64();
        let looks_per_minute = looks as f64 * 60.0 / t.elapsed().as_secs_f64();
        println!(
            "probe_cost pods={} stuck={stuck_name} setup_s={:.1} first_look_probes={first} first_look_s={first_s:.2} \
             waiting_looks_per_min={looks_per_minute:.0} waiting_probes_per_min={per_minute:.1} \
             without_cache_accelerate_refresh_per_min={looks_per_minute:.0} without_cache_reduce_bundle_per_min={:.0}",
            meshed.len(),
            setup.as_secs_f64(),
            looks_per_minute * meshed.len() as f64,
        );
        sim.shutdown().await;
        Ok(())
    })
}

//! A full trust-anchor rotation at 1,000, 10,000 (and, when the simulator holds it, 50,000)
//! meshed pods: what the operator costs the cluster and how quickly it reacts.
//!
//! Each size runs in its own child process (memory figures do not mix) holding the simulator
//! (`demo-all-kinds` plus N pods spread over Deployments, StatefulSets and DaemonSets, 100 per
//! `scale-NNN` namespace, with a CronJob firing in each every two real minutes). The child runs
//! the operator binary with the chart's flags, drives the user guide's rotation as
//! `e2e_walkthrough` does (renew the anchor, `rollout restart` every workload, renew the
//! issuer, restart twice more) and prints one table: the operator's RSS and CPU seconds (from
//! `/proc`), its API requests by verb and resource (the simulator's `/metrics`,
//! `user_agent="trust-rotation-operator"`), the two reaction latencies (watched from
//! outside), the probe sweep (from the operator's own step histogram), the rotation's wall
//! time and the mTLS oracle's minimum. The figures also go to
//! `target/bench/rotation_scale-<N>.json` so two commits can be compared.
//!
//! With two or more cores and `taskset`, the simulator's process runs on core 0 and the
//! operator on core 1 (`ROTATION_BENCH_PIN=0` turns that off). Every probe pays a simulated
//! network round trip of `ROTATION_BENCH_PROBE_LATENCY_MS` (default 20), so the probe sweep is
//! compared with its ideal, proxies x latency / concurrency.
//!
//! `ROTATION_BENCH_OPERATOR_WRAPPER` prefixes the operator's command line with a profiler
//! (`heaptrack -o /tmp/op`, say); the operator's RSS and CPU figures are then the wrapper's.
//!
//! `cargo bench -p trust-rotation-operator --bench rotation_scale` (in `make bench`) runs
//! 1,000 and 10,000 pods; `ROTATION_BENCH_PODS=1000,10000,50000` picks sizes. Without
//! `--bench` (`cargo test --bench rotation_scale`, `make bench-smoke` in CI) it runs 1,000 pods
//! and checks only that the rotation completed with the oracle at 1.0 and that the table and
//! the JSON were written: no timing assertion.

#![forbid(unsafe_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trust_rotation_crds::{Phase, TrustAnchorRotation};

const OPERATOR_UA: &str = "trust-rotation-operator";
/// The chart's `probe.concurrency` (passed to the operator below).
const PROBE_CONCURRENCY: usize = 50;

/// The network round trip every probe pays (`ROTATION_BENCH_PROBE_LATENCY_MS`, default 20):
/// the simulator's proxies wait it out before answering a connection.
fn probe_latency() -> Duration {
    Duration::from_millis(
        std::env::var("ROTATION_BENCH_PROBE_LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    )
}

// === /proc ===

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Both processes' CPU seconds at one moment.
struct CpuSample {
    at: Instant,
    operator_s: f64,
    simulator_s: f64,
}

/// The share of a core the operator and the simulator's process each used between `from` and
/// `to`, from the samples nearest those moments.
fn cpu_share(samples: &[CpuSample], from: Instant, to: Instant) -> Option<(f64, f64)> {
    let first = samples.iter().find(|s| s.at >= from)?;
    let last = samples.iter().rev().find(|s| s.at <= to)?;
    let secs = last.at.checked_duration_since(first.at)?.as_secs_f64();
    (secs > 0.0).then(|| {
        (
            (last.operator_s - first.operator_s) / secs,
            (last.simulator_s - first.simulator_s) / secs,
        )
    })
}

/// utime + stime of `pid` in seconds (USER_HZ = 100 on Linux).
fn proc_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // rest[0] is field 3; utime and stime are fields 14 and 15.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// === the simulator's request counters ===

/// The operator's requests so far by (verb, resource), every code summed.
fn operator_requests(sim: &cluster_sim::Sim) -> BTreeMap<(String, String), u64> {
    let text = sim.metrics().render(sim.store());
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cluster_sim_requests_total{") else {
            continue;
        };
        let Some((labels, n)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        if label("user_agent") != OPERATOR_UA {
            continue;
        }
        *out.entry((label("verb"), label("resource"))).or_default() +=
            n.trim().parse::<u64>().unwrap_or(0);
    }
    out
}

fn minus(
    a: &BTreeMap<(String, String), u64>,
    b: &BTreeMap<(String, String), u64>,
) -> BTreeMap<(String, String), u64> {
    a.iter()
        .map(|(k, n)| (k.clone(), n - b.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A sample of the operator's own Prometheus text.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// === what the bench watches from outside ===

#[derive(Default)]
struct Seen {
    /// (when, phase) each time the status' phase changed.
    phases: Vec<(Instant, Phase)>,
    /// When the anchor Secret's certificate changed.
    anchor_changes: Vec<Instant>,
    /// When the trust-roots ConfigMap's bundle changed.
    bundle_changes: Vec<Instant>,
    /// Every change to a meshed pod owned by a long-running workload (not a Job's).
    pod_events: Vec<Instant>,
}

/// A watch's items without its errors: the watcher retries those itself (with backoff), and
/// a loop that ended on the first one silently lost every later observation (the
/// 50,000-pod run recorded no "last pod converged" sample at all).
async fn ok_only<T, E>(item: Result<T, E>) -> Option<T> {
    item.ok()
}

/// The anchor's and the bundle's changes, when the simulator's store made them: straight
/// from its change stream in this process, not through an HTTP watch, whose delivery under a
/// 50,000-pod load can come seconds late (a run's watch saw the anchor change after the
/// expanded bundle, and so reported the reduced bundle's write, 686 s later, as the reaction).
fn spawn_store_watch(sim: &cluster_sim::Sim, seen: &Arc<Mutex<Seen>>) {
    use cluster_sim::store::{ResourceKey, Store};
    use tokio::sync::broadcast::error::RecvError;
    let store = sim.store().clone();
    let (_, mut rx) = store.watch(None).expect("the store's change stream");
    // (The anchor's certificate, the bundle) as the store holds them now.
    let pki = |store: &Store| {
        let field = |plural: &str, ns: &str, name: &str, field: &str| {
            let o = store.get(&ResourceKey::new("", plural), Some(ns), name)?;
            o["data"][field].as_str().map(str::to_string)
        };
        (
            field("secrets", "cert-manager", "linkerd-trust-anchor", "tls.crt"),
            field(
                "configmaps",
                "linkerd",
                "linkerd-identity-trust-roots",
                "ca-bundle.crt",
            ),
        )
    };
    let s = seen.clone();
    tokio::spawn(async move {
        let (mut anchor, mut bundle) = pki(&store);
        loop {
            match rx.recv().await {
                Ok(ev) if matches!(ev.key.plural.as_str(), "secrets" | "configmaps") => {}
                Ok(_) => continue,
                // Missed changes: compare with what the store holds now.
                Err(RecvError::Lagged(n)) => {
                    eprintln!("rotation_scale: the store's change stream skipped {n} changes")
                }
                Err(RecvError::Closed) => return,
            }
            let now = Instant::now();
            let (a, b) = pki(&store);
            let mut v = s.lock().unwrap();
            if a != anchor {
                v.anchor_changes.push(now);
                anchor = a;
            }
            if b != bundle {
                v.bundle_changes.push(now);
                bundle = b;
            }
        }
    });
}

fn spawn_watchers(client: &kube::Client, seen: &Arc<Mutex<Seen>>) {
    let tars: Api<TrustAnchorRotation> = Api::all(client.clone());
    let s = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(tars, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .filter_map(ok_only)
            .boxed();
        while let Some(tar) = stream.next().await {
            if let Some(p) = tar.status.and_then(|s| s.phase) {
                let mut v = s.lock().unwrap();
                if v.phases.last().map(|(_, q)| *q) != Some(p) {
                    v.phases.push((Instant::now(), p));
                }
            }
        }
    });
    let pods: Api<Pod> = Api::all(client.clone());
    let s = seen.clone();
    tokio::spawn(async move {
        let cfg = watcher::Config::default().labels("linkerd.io/control-plane-ns=linkerd");
        let mut stream = watcher(pods, cfg)
            .default_backoff()
            .filter_map(ok_only)
            .boxed();
        while let Some(ev) = stream.next().await {
            let pod = match ev {
                watcher::Event::Apply(p) | watcher::Event::Delete(p) => p,
                _ => continue,
            };
            let of_job = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Job");
            if !of_job {
                s.lock().unwrap().pod_events.push(Instant::now());
            }
        }
    });
}

/// Nearest-rank percentile of `v` (sorted here), in seconds.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

// === one size, in its own process ===

fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    dir.canonicalize().unwrap_or(dir)
}

fn spawn_operator(kubeconfig: &Path, cpu: Option<usize>, log: &Path) -> Operator {
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        std::net::SocketAddr::from(([127, 0, 0, 1], l.local_addr().expect("bound").port()))
    };
    let bin = env!("CARGO_BIN_EXE_trust-rotation-operator");
    // `ROTATION_BENCH_OPERATOR_WRAPPER="heaptrack -o /tmp/op"` runs the operator under a
    // profiler; the RSS and CPU figures are then the wrapper's, not the operator's.
    let mut argv: Vec<String> = std::env::var("ROTATION_BENCH_OPERATOR_WRAPPER")
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(c) = cpu {
        argv.splice(0..0, ["taskset".to_string(), "-c".into(), c.to_string()]);
    }
    argv.push(bin.to_string());
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // Its log (stdout and stderr, one file offset) is kept for a run that fails.
    let out = std::fs::File::create(log).expect("the operator's log file");
    // The chart's arguments and defaults (values.yaml), out of cluster as e2e/demo.sh runs it.
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg(format!("--admin-addr={admin}"))
        .arg(format!("--probe-concurrency={PROBE_CONCURRENCY}"))
        .args([
            "--log-level=info",
            "--log-format=json",
            "--leader-election=true",
            "--lease-namespace=linkerd",
            "--probe=direct",
            "--probe-timeout=5s",
            "--resync-interval=30s",
        ])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(out.try_clone().expect("the operator's log file"))
        .stderr(out)
        .kill_on_drop(true);
    // `taskset` execs the operator: the pid is the operator's.
    let child = cmd.spawn().expect("the operator binary starts");
    Operator { child, admin }
}

/// Every namespace with workloads to restart: the application's and the scale namespaces.
async fn restart_everything(client: &kube::Client, namespaces: &[String]) {
    for ns in namespaces {
        rollout_restart_all_kinds(client, ns).await;
    }
}

fn child(pods: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(child_run(pods))
}

async fn child_run(pods: usize) -> anyhow::Result<()> {
    // The source as the run starts (a run takes half an hour; the tree may move meanwhile).
    let commit = source_commit();
    let operator_cpu: Option<usize> = std::env::var("ROTATION_BENCH_OPERATOR_CPU")
        .ok()
        .and_then(|c| c.parse().ok());
    // Bounds every wait: a stuck phase fails the run naming it (wait_status panics with the
    // phase, step and status it saw).
    let step_timeout = Duration::from_secs(120 + pods as u64 / 40);
    let t = Instant::now();
    let sim = cluster_sim::Sim::start(cluster_sim::SimConfig {
        topology: cluster_sim::Topology::DemoAllKinds,
        pods,
        // The demo's seconds, with workload certificates that move to the new issuer only when
        // the guide's restart asks them to (as in the operator's end-to-end tests), and
        // CronJobs on the real clock: the demo's 5-second minute fired a Job in each of the
        // 501 namespaces every 10 s at 50,000 pods (50 Jobs a second), which took most of
        // the simulator's core from the rollouts being measured.
        durations: cluster_sim::Durations {
            workload_cert_lifetime: Duration::from_secs(600),
            cron_minute: cluster_sim::Durations::real().cron_minute,
            proxy_admin_latency: probe_latency(),
            ..cluster_sim::Durations::demo()
        },
        listeners: cluster_sim::mesh::listeners::ListenerConfig::helpers_from_this_executable(),
        ..Default::default()
    })
    .await?;
    let sim_start_s = t.elapsed().as_secs_f64();
    let client = sim.client();
    install_rotation(&client).await;
    let namespaces = workload_namespaces(&client).await;
    // Running meshed pods outside the control plane (a CronJob's finished pods are no target).
    let workload = Api::<Pod>::all(client.clone())
        .list(&kube::api::ListParams::default().labels("linkerd.io/control-plane-ns=linkerd"))
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() != Some("linkerd"))
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    eprintln!(
        "rotation_scale {pods}: simulator up in {sim_start_s:.1}s ({workload} workload pods in {} namespaces)",
        namespaces.len()
    );

    let log = std::env::temp_dir().join(format!("rotation_scale-{pods}-operator.log"));
    let op = spawn_operator(sim.kubeconfig_path(), operator_cpu, &log);
    eprintln!("rotation_scale {pods}: operator log {}", log.display());
    let pid = op.child.id().expect("the operator runs");
    op.wait_ready().await;
    let t = Instant::now();
    wait_status(&client, "Synced (before the rotation)", step_timeout, |s| {
        s.phase == Some(Phase::Synced)
            && s.trust_bundle
                .as_ref()
                .is_some_and(|b| b.target > 0 && b.converged == b.target)
    })
    .await;
    let first_synced_s = t.elapsed().as_secs_f64();

    // RSS sampler (VmHWM gives the peak; this keeps the curve's maximum over the rotation).
    // It also samples both processes' CPU seconds, to tell which core bounds the probe sweep.
    let rss_max = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cpu_samples: Arc<Mutex<Vec<CpuSample>>> = Arc::default();
    {
        let (m, samples) = (rss_max.clone(), cpu_samples.clone());
        tokio::spawn(async move {
            loop {
                m.fetch_max(
                    proc_status_kib(pid, "VmRSS:"),
                    std::sync::atomic::Ordering::Relaxed,
                );
                samples.lock().unwrap().push(CpuSample {
                    at: Instant::now(),
                    operator_s: proc_cpu_s(pid),
                    simulator_s: proc_cpu_s(std::process::id()),
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    spawn_watchers(&client, &seen);
    spawn_store_watch(&sim, &seen);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steady_before_kib = proc_status_kib(pid, "VmRSS:");
    let cpu_before = proc_cpu_s(pid);
    let requests_before = operator_requests(&sim);
    sim.oracle().reset();

    // The guide's rotation, as e2e_walkthrough drives it, with every kind restarted.
    eprintln!("rotation_scale {pods}: rotating");
    let t0 = Instant::now();
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(
        &client,
        Phase::PropagatingTrustRoots,
        "AwaitPropagation",
        step_timeout,
    )
    .await;
    restart_everything(&client, &namespaces).await;
    wait_phase(
        &client,
        Phase::WaitingForIdentityRotation,
        "AwaitIssuer",
        step_timeout,
    )
    .await;
    cmctl_renew(&client, "linkerd", "linkerd-identity-issuer").await;
    wait_phase(
        &client,
        Phase::RenewingWorkloadCerts,
        "AccelerateRefresh",
        step_timeout,
    )
    .await;
    restart_everything(&client, &namespaces).await;
    wait_phase(
        &client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        step_timeout,
    )
    .await;
    restart_everything(&client, &namespaces).await;
    wait_status(&client, "Synced after the rotation", step_timeout, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none() && !s.history.is_empty()
    })
    .await;
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_rotation = proc_cpu_s(pid) - cpu_before;
    let oracle = sim.oracle().report();
    let requests_rotation = minus(&operator_requests(&sim), &requests_before);
    let peak_during_kib = rss_max.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steady_after_kib = proc_status_kib(pid, "VmRSS:");
    let hwm_kib = proc_status_kib(pid, "VmHWM:");
    // This process holds the simulator (and the bench's few watches).
    let sim_hwm_kib = proc_status_kib(std::process::id(), "VmHWM:");
    let cpu_total = proc_cpu_s(pid);
    let requests_total = operator_requests(&sim);
    let op_metrics = op.metrics().await;
    let proxies = Api::<Pod>::all(client.clone())
        .list(&kube::api::ListParams::default().labels("linkerd.io/control-plane-ns=linkerd"))
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();

    // Reaction latencies, from what the watchers saw.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let anchor_to_bundle: Vec<f64> = seen
        .anchor_changes
        .iter()
        .filter_map(|a| {
            seen.bundle_changes
                .iter()
                .find(|b| *b > a)
                .map(|b| (*b - *a).as_secs_f64())
        })
        .collect();
    let waits_on_pods = [
        Phase::RefreshingControlPlane,
        Phase::PropagatingTrustRoots,
        Phase::RenewingWorkloadCerts,
        Phase::RemovingOldTrustRoots,
    ];
    let mut converged_to_phase = Vec::new();
    for w in seen.phases.windows(2) {
        let ((entered, from), (left, to)) = (w[0], w[1]);
        if !waits_on_pods.contains(&from) {
            continue;
        }
        if let Some(last) = seen
            .pod_events
            .iter()
            .filter(|e| **e > entered && **e <= left)
            .max()
        {
            converged_to_phase.push((format!("{from} -> {to}"), (left - *last).as_secs_f64()));
        }
    }
    let c2p: Vec<f64> = converged_to_phase.iter().map(|(_, s)| *s).collect();

    // The probe sweep: ReduceBundle's final ("done") execution probes every live proxy afresh.
    let sweep_sum = metric_value(
        &op_metrics,
        "trust_rotation_step_duration_seconds_sum{step=\"ReduceBundle\",outcome=\"done\"}",
    );
    let sweep_count = metric_value(
        &op_metrics,
        "trust_rotation_step_duration_seconds_count{step=\"ReduceBundle\",outcome=\"done\"}",
    );
    let sweep_s = match (sweep_sum, sweep_count) {
        (Some(s), Some(c)) if c > 0.0 => Some(s / c),
        _ => None,
    };
    let probes_per_s = sweep_s.map(|s| proxies as f64 / s);
    // Its ideal: every probe waits out the latency, PROBE_CONCURRENCY at a time (the pod list
    // comes from the operator's cache, so there is no list time to add).
    let sweep_ideal_s = probe_latency().as_secs_f64() * proxies as f64 / PROBE_CONCURRENCY as f64;
    // What each core was busy with during the sweep: it ends with ReduceBundle writing the
    // reduced bundle, the rotation's last bundle change.
    let sweep_cpu = sweep_s
        .zip(seen.bundle_changes.last())
        .and_then(|(s, end)| {
            cpu_share(
                &cpu_samples.lock().unwrap(),
                end.checked_sub(Duration::from_secs_f64(s))?,
                *end,
            )
        });

    let person = person_convergence_count(sim.kubeconfig_path()).await;

    let pinned = match operator_cpu {
        Some(c) => format!("simulator and bench on core 0, operator on core {c} (taskset)"),
        None => "not pinned".to_string(),
    };
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };

    // The table.
    let mut out = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "\n== rotation_scale: {workload} running workload pods ({pods} + demo-all-kinds) in {} namespaces, {proxies} proxies ==",
        namespaces.len()
    );
    let _ = writeln!(
        out,
        "   {profile} build; {pinned}; simulator up in {sim_start_s:.1}s, first Synced {first_synced_s:.1}s after /ready"
    );
    let row = |out: &mut String, k: &str, v: String| {
        let _ = writeln!(out, "   {k:<52} {v}");
    };
    row(
        &mut out,
        "rotation wall time (anchor renewed -> Synced)",
        format!("{wall_s:.1} s"),
    );
    row(
        &mut out,
        "oracle minimum (mTLS ok ratio during the rotation)",
        format!("{} ({} samples)", oracle.min_ratio, oracle.samples),
    );
    row(
        &mut out,
        "RSS steady, Synced before the rotation",
        format!("{:.1} MiB", mib(steady_before_kib)),
    );
    row(
        &mut out,
        "RSS peak (VmHWM, whole run)",
        format!("{:.1} MiB", mib(hwm_kib)),
    );
    row(
        &mut out,
        "RSS peak sampled during the rotation",
        format!("{:.1} MiB", mib(peak_during_kib)),
    );
    row(
        &mut out,
        "RSS steady, Synced after the rotation",
        format!("{:.1} MiB", mib(steady_after_kib)),
    );
    row(
        &mut out,
        "simulator RSS peak (VmHWM of the bench's process)",
        format!(
            "{:.0} MiB ({:.1} KiB per workload pod)",
            mib(sim_hwm_kib),
            sim_hwm_kib as f64 / workload.max(1) as f64
        ),
    );
    row(
        &mut out,
        "CPU seconds (utime+stime): rotation / whole run",
        format!(
            "{cpu_rotation:.2} s / {cpu_total:.2} s ({:.0}% of a core during the rotation)",
            100.0 * cpu_rotation / wall_s
        ),
    );
    row(
        &mut out,
        "anchor Secret changed -> expanded bundle written",
        format!(
            "p50 {:.2} s, p99 {:.2} s (n={}, watched)",
            percentile(&anchor_to_bundle, 50.0),
            percentile(&anchor_to_bundle, 99.0),
            anchor_to_bundle.len()
        ),
    );
    row(
        &mut out,
        "last pod converged -> next phase in status",
        format!(
            "p50 {:.2} s, p99 {:.2} s (n={}, watched)",
            percentile(&c2p, 50.0),
            percentile(&c2p, 99.0),
            c2p.len()
        ),
    );
    for (t, s) in &converged_to_phase {
        row(&mut out, &format!("  {t}"), format!("{s:.2} s"));
    }
    row(
        &mut out,
        "probe sweep (ReduceBundle's final look, every proxy)",
        match (sweep_s, probes_per_s) {
            (Some(s), Some(p)) => format!("{s:.2} s, {p:.0} probes/s (operator's step histogram)"),
            _ => "not seen".into(),
        },
    );
    row(
        &mut out,
        "  its ideal (proxies x latency / concurrency)",
        match sweep_s {
            Some(s) if sweep_ideal_s > 0.0 => format!(
                "{sweep_ideal_s:.2} s ({} ms a probe, {PROBE_CONCURRENCY} at once) -> {:.2}x (goal <= 1.25x)",
                probe_latency().as_millis(),
                s / sweep_ideal_s
            ),
            _ => "no probe latency (ROTATION_BENCH_PROBE_LATENCY_MS=0)".into(),
        },
    );
    row(
        &mut out,
        "  CPU busy during the sweep",
        match sweep_cpu {
            Some((op, sim)) => format!(
                "operator {:.0}%, simulator's process {:.0}% (of one core each)",
                op * 100.0,
                sim * 100.0
            ),
            None => "not sampled".into(),
        },
    );
    row(
        &mut out,
        "a person's convergence count, per look",
        match &person {
            Ok((s, answer)) => format!(
                "{s:.2} s ({answer} current; `linkerd check --proxy`'s way with kubectl + jq)"
            ),
            Err(why) => format!("not run ({why})"),
        },
    );
    let total_rot: u64 = requests_rotation.values().sum();
    let total_all: u64 = requests_total.values().sum();
    let _ = writeln!(
        out,
        "   operator API requests (simulator /metrics, by verb and resource): rotation {total_rot}, whole run {total_all}"
    );
    for ((verb, resource), n) in &requests_total {
        let during = requests_rotation
            .get(&(verb.clone(), resource.clone()))
            .copied()
            .unwrap_or(0);
        let _ = writeln!(out, "     {verb:<8} {resource:<28} {during:>8} {n:>8}");
    }
    print!("{out}");

    let figures = json!({
        "bench": "rotation_scale",
        "pods": pods,
        "workload_pods": workload,
        "namespaces": namespaces.len(),
        "proxies": proxies,
        "profile": profile,
        "pinning": pinned,
        "commit": commit,
        "simulator_start_s": sim_start_s,
        "first_synced_s": first_synced_s,
        "rotation_wall_s": wall_s,
        "oracle_min_ratio": oracle.min_ratio,
        "oracle_samples": oracle.samples,
        "rss_steady_before_mib": mib(steady_before_kib),
        "rss_peak_mib": mib(hwm_kib),
        "rss_peak_during_rotation_mib": mib(peak_during_kib),
        "rss_steady_after_mib": mib(steady_after_kib),
        "simulator_rss_peak_mib": mib(sim_hwm_kib),
        "cpu_rotation_s": cpu_rotation,
        "cpu_total_s": cpu_total,
        "anchor_to_bundle_s": anchor_to_bundle,
        "converged_to_next_phase_s": converged_to_phase.iter().map(|(t, s)| json!({"transition": t, "s": s})).collect::<Vec<_>>(),
        "probe_sweep_s": sweep_s,
        "probes_per_s": probes_per_s,
        "probe_latency_ms": probe_latency().as_millis() as u64,
        "probe_sweep_ideal_s": sweep_ideal_s,
        "probe_sweep_cpu_operator": sweep_cpu.map(|(op, _)| op),
        "probe_sweep_cpu_simulator": sweep_cpu.map(|(_, sim)| sim),
        "check_proxy_script_s": person.as_ref().ok().map(|(s, _)| *s),
        "requests_rotation": requests_rotation.iter().map(|((v, r), n)| json!({"verb": v, "resource": r, "n": n})).collect::<Vec<_>>(),
        "requests_total": requests_total.iter().map(|((v, r), n)| json!({"verb": v, "resource": r, "n": n})).collect::<Vec<_>>(),
    });
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("rotation_scale-{pods}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
    println!("   figures: {}", path.display());

    let status = op.terminate().await;
    anyhow::ensure!(status.success(), "the operator exits cleanly: {status:?}");
    sim.shutdown().await;
    anyhow::ensure!(
        oracle.min_ratio >= 1.0,
        "mTLS degraded during the rotation: min {} ({:?})",
        oracle.min_ratio,
        oracle.intervals
    );
    Ok(())
}

/// How long a person waits for one convergence count done as `linkerd check --proxy` does it
/// (list every meshed pod, compare each proxy's trust-anchors env with the bundle), written as
/// the kubectl + jq script they would run. The operator keeps the same count from its watch,
/// so what it costs per look is the reaction latency above. Returns the seconds and the
/// script's answer (`current/total`).
async fn person_convergence_count(kubeconfig: &Path) -> Result<(f64, String), String> {
    const SCRIPT: &str = r#"bundle=$(kubectl -n linkerd get cm linkerd-identity-trust-roots -o json | jq -r '.data["ca-bundle.crt"]')
kubectl get pods -A -l linkerd.io/control-plane-ns=linkerd -o json | jq -r --arg b "$bundle" '
  def trim: gsub("^\\s+|\\s+$"; "");
  [.items[] | select(.metadata.namespace != "linkerd")
   | [(.spec.containers + (.spec.initContainers // []))[] | select(.name == "linkerd-proxy")
      | .env[]? | select(.name == "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS") | .value][0]
   | ((. // "") | trim) == ($b | trim)]
  | "\(map(select(.)) | length)/\(length)"'"#;
    let t = Instant::now();
    let out = tokio::process::Command::new("sh")
        .args(["-ec", SCRIPT])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok((s, String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

// === the parent: one child per size ===

/// Whether to pin: two cores in this process' affinity and `taskset` on the PATH.
/// `HEAD`, with `-dirty` when the working tree differs from it.
fn source_commit() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

fn can_pin() -> bool {
    if std::env::var("ROTATION_BENCH_PIN").as_deref() == Ok("0") {
        return false;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores >= 2
        && std::process::Command::new("taskset")
            .args(["-c", "0,1", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

fn run_size(pods: usize, pin: bool, smoke: bool) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = if pin {
        let mut c = std::process::Command::new("taskset");
        c.args(["-c", "0"]).arg(&exe);
        c.env("ROTATION_BENCH_OPERATOR_CPU", "1");
        c
    } else {
        std::process::Command::new(&exe)
    };
    cmd.env("ROTATION_BENCH_CHILD_PODS", pods.to_string());
    // Its own process group: a timeout kills the child and the operator it started.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("could not start: {e}"))?;
    let budget = Duration::from_secs(900 + pods as u64 / 10);
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => break,
            Ok(Some(s)) => {
                return Err(format!(
                    "failed ({s}); its panic above names the phase it stuck in"
                ))
            }
            Ok(None) if started.elapsed() > budget => {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                return Err(format!("killed after {}s", budget.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(e.to_string()),
        }
    }
    if smoke {
        let json = target_dir().join(format!("bench/rotation_scale-{pods}.json"));
        let v: serde_json::Value = std::fs::read_to_string(&json)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| format!("{} was not written", json.display()))?;
        if v["oracle_min_ratio"].as_f64() != Some(1.0) {
            return Err(format!(
                "oracle minimum {} is not 1.0",
                v["oracle_min_ratio"]
            ));
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // The simulator's listener helpers (meshes beyond one process's open-file limit) run
    // this same executable.
    cluster_sim::mesh::listeners::serve_helper_if_asked();
    if let Ok(n) = std::env::var("ROTATION_BENCH_CHILD_PODS") {
        return child(n.parse()?);
    }
    // `cargo bench` passes `--bench`; `cargo test --bench rotation_scale` (CI's smoke run)
    // does not.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let default = if smoke { "1000" } else { "1000,10000" };
    let sizes = std::env::var("ROTATION_BENCH_PODS").unwrap_or_else(|_| default.into());
    let pin = can_pin();
    println!(
        "rotation_scale: sizes {sizes}; {}",
        if pin {
            "simulator pinned to core 0, operator to core 1"
        } else {
            "not pinned (fewer than 2 cores, no taskset, or ROTATION_BENCH_PIN=0)"
        }
    );
    let mut failed = Vec::new();
    for size in sizes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let pods: usize = size.replace('_', "").parse()?;
        if let Err(why) = run_size(pods, pin, smoke) {
            println!("rotation_scale {pods} pods: SKIPPED/FAILED: {why}");
            failed.push(pods);
        }
    }
    // The smoke run fails on any size; `make bench` goes on to the other benches, with the
    // line above saying which size did not complete.
    if smoke {
        anyhow::ensure!(failed.is_empty(), "sizes that did not complete: {failed:?}");
    } else if !failed.is_empty() {
        println!("rotation_scale: sizes that did not complete: {failed:?}");
    }
    Ok(())
}

//! `cluster-sim serve`: a simulated Kubernetes cluster on loopback until SIGTERM/SIGINT.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use cluster_sim::{Durations, ErrorRule, FaultConfig, Sim, SimConfig, Topology};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "cluster-sim",
    version,
    about = "A simulated Kubernetes cluster on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API until SIGTERM/SIGINT; write the kubeconfig once ready.
    Serve(ServeArgs),
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TopologyArg {
    Empty,
    Demo,
    DemoAllKinds,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Listen address (loopback only); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Where to write the kubeconfig (atomically, once serving).
    #[arg(long, default_value = "cluster-sim.kubeconfig")]
    kubeconfig: PathBuf,
    /// Which cluster to simulate.
    #[arg(long, value_enum, default_value = "empty")]
    topology: TopologyArg,
    /// Extra meshed pods for scale runs.
    #[arg(long, default_value_t = 0)]
    pods: usize,
    /// Use real-world durations (24h certificates...) instead of the demo's seconds.
    #[arg(long)]
    real_durations: bool,
    /// Seed for reproducible randomness (fault injection, pod IPs).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Added latency before a proxy's admin port answers each connection (a network round
    /// trip for probes), e.g. 20ms.
    #[arg(long, value_parser = parse_duration)]
    proxy_admin_latency: Option<Duration>,
    /// Added latency on every API request, e.g. 50ms.
    #[arg(long, value_parser = parse_duration)]
    fault_latency: Option<Duration>,
    /// Error answers: VERB:RESOURCE:CODE:RATE[:RETRY_AFTER] ('*' for any), repeatable,
    /// e.g. list:pods:503:0.2 or '*:configmaps:429:0.5:2'.
    #[arg(long = "fault-error", value_parser = ErrorRule::parse)]
    fault_errors: Vec<ErrorRule>,
    /// End every watch after this many events.
    #[arg(long)]
    fault_watch_cut_events: Option<usize>,
    /// End every watch after this long, e.g. 10s.
    #[arg(long, value_parser = parse_duration)]
    fault_watch_cut_after: Option<Duration>,
    /// Fraction of updates and patches answered 409 Conflict.
    #[arg(long, default_value_t = 0.0)]
    fault_conflict_rate: f64,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 50ms, 2s or 1m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> anyhow::Result<()> {
    // Started as a listener helper by a simulator beyond its open-file limit: serve that.
    cluster_sim::mesh::listeners::serve_helper_if_asked();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level).context("--log-level")?,
        )
        .with_writer(std::io::stderr)
        .init();
    if !(0.0..=1.0).contains(&args.fault_conflict_rate) {
        anyhow::bail!(
            "--fault-conflict-rate must be between 0 and 1, got {}",
            args.fault_conflict_rate
        );
    }
    let topology = match args.topology {
        TopologyArg::Empty => Topology::Empty,
        TopologyArg::Demo => Topology::Demo,
        TopologyArg::DemoAllKinds => Topology::DemoAllKinds,
    };
    let durations = Durations {
        proxy_admin_latency: args.proxy_admin_latency.unwrap_or_default(),
        ..if args.real_durations {
            Durations::real()
        } else {
            Durations::demo()
        }
    };
    let config = SimConfig {
        addr: args.addr,
        kubeconfig_path: Some(args.kubeconfig.clone()),
        topology,
        pods: args.pods,
        durations,
        faults: FaultConfig {
            latency: args.fault_latency.unwrap_or_default(),
            errors: args.fault_errors,
            watch_cut_after_events: args.fault_watch_cut_events,
            watch_cut_after: args.fault_watch_cut_after,
            conflict_rate: args.fault_conflict_rate,
        },
        seed: args.seed,
        // Meshes beyond this process's open-file limit spread their admin ports over helper
        // processes running this same executable.
        listeners: cluster_sim::mesh::listeners::ListenerConfig::helpers_from_this_executable(),
    };
    let sim = Sim::start(config).await?;
    tracing::info!(addr = %sim.addr(), kubeconfig = %sim.kubeconfig_path().display(), "cluster-sim serving");
    eprintln!(
        "cluster-sim: serving on https://{}; kubeconfig {}",
        sim.addr(),
        sim.kubeconfig_path().display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

//! Command-line flags; every flag can also come from a `TRUST_ROTATION_*` variable.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use trust_rotation_steps::probe::ProbeMode;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// A duration within `[min, max]`, in the proxy's grammar (digits and one unit).
fn bounded(s: &str, min: Duration, max: Duration, why_min: &str) -> Result<Duration, String> {
    let d = trust_rotation_crds::parse_proxy_duration(s)?;
    if d < min {
        return Err(format!(
            "{s} is shorter than the minimum of {}: {why_min}",
            human(min)
        ));
    }
    if d > max {
        return Err(format!("{s} is longer than the maximum of {}", human(max)));
    }
    Ok(d)
}

fn human(d: Duration) -> String {
    if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else if d.as_secs().is_multiple_of(60) && d.as_secs() >= 60 {
        format!("{}m", d.as_secs() / 60)
    } else {
        format!("{}s", d.as_secs())
    }
}

/// Bounds of `--lease-duration`.
pub const LEASE_DURATION_MIN: Duration = Duration::from_secs(2);
pub const LEASE_DURATION_MAX: Duration = Duration::from_secs(300);
/// Bounds of `--resync-interval`.
pub const RESYNC_MIN: Duration = Duration::from_secs(1);
pub const RESYNC_MAX: Duration = Duration::from_secs(3600);
/// Bounds of `--probe-timeout` (at most the leader client's read timeout, which also bounds
/// a probe through the API server).
pub const PROBE_TIMEOUT_MIN: Duration = Duration::from_millis(100);
pub const PROBE_TIMEOUT_MAX: Duration = crate::clients::LEADER_READ_TIMEOUT;

fn lease_duration(s: &str) -> Result<Duration, String> {
    bounded(
        s,
        LEASE_DURATION_MIN,
        LEASE_DURATION_MAX,
        "the leader renews every 2/15 of it and a shorter lease is lost to ordinary API latency",
    )
}

fn resync_interval(s: &str) -> Result<Duration, String> {
    bounded(
        s,
        RESYNC_MIN,
        RESYNC_MAX,
        "every resync re-reads the rotation's objects",
    )
}

fn probe_timeout(s: &str) -> Result<Duration, String> {
    bounded(
        s,
        PROBE_TIMEOUT_MIN,
        PROBE_TIMEOUT_MAX,
        "a TLS handshake with a busy proxy takes longer",
    )
}

/// Rotates the Linkerd trust anchor end to end without breaking mTLS.
#[derive(Debug, Clone, Parser)]
#[command(name = "trust-rotation-operator", version, about, long_about = None)]
pub struct Args {
    /// Kubeconfig file (default: in-cluster config, else $KUBECONFIG or ~/.kube/config).
    #[arg(long, env = "TRUST_ROTATION_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use.
    #[arg(long, env = "TRUST_ROTATION_CONTEXT")]
    pub context: Option<String>,

    /// Address of the admin server (/live, /ready, /metrics).
    #[arg(
        long,
        env = "TRUST_ROTATION_ADMIN_ADDR",
        default_value = "0.0.0.0:9990"
    )]
    pub admin_addr: SocketAddr,

    /// Log level or tracing filter directives (e.g. `info`, `debug,kube=info`).
    #[arg(long, env = "TRUST_ROTATION_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(
        long,
        env = "TRUST_ROTATION_LOG_FORMAT",
        value_enum,
        default_value = "plain"
    )]
    pub log_format: LogFormat,

    /// Elect a leader with a coordination.k8s.io Lease, so several replicas are safe.
    #[arg(long, env = "TRUST_ROTATION_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        env = "TRUST_ROTATION_LEASE_NAMESPACE",
        default_value = "linkerd"
    )]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "TRUST_ROTATION_LEASE_NAME",
        default_value = "trust-rotation-operator"
    )]
    pub lease_name: String,

    /// How long a standby waits, after the Lease last changed, before it takes over
    /// (2s..5m). The leader stops writing 2/3 of it after its last successful renewal.
    #[arg(long, env = "TRUST_ROTATION_LEASE_DURATION", default_value = "15s", value_parser = lease_duration, hide = true)]
    pub lease_duration: Duration,

    /// How proxies are probed: dial <podIP>:4191 directly, or tunnel through the API server.
    #[arg(
        long,
        env = "TRUST_ROTATION_PROBE",
        value_enum,
        default_value = "direct"
    )]
    pub probe: ProbeMode,

    /// Proxies probed at once (1..1000).
    #[arg(long, env = "TRUST_ROTATION_PROBE_CONCURRENCY", default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub probe_concurrency: u16,

    /// Per-proxy probe timeout (digits and one unit: ms, s, m, h; 100ms..30s).
    #[arg(long, env = "TRUST_ROTATION_PROBE_TIMEOUT", default_value = "5s", value_parser = probe_timeout)]
    pub probe_timeout: Duration,

    /// How often every rotation is looked at even when nothing changed (1s..1h).
    #[arg(long, env = "TRUST_ROTATION_RESYNC_INTERVAL", default_value = "30s", value_parser = resync_interval)]
    pub resync_interval: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_nothing_but_kubeconfig_and_admin_addr() {
        let a = Args::try_parse_from([
            "op",
            "--kubeconfig",
            "/tmp/k",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert!(a.leader_election);
        assert_eq!(a.lease_namespace, "linkerd");
        assert_eq!(a.lease_name, "trust-rotation-operator");
        assert_eq!(a.probe, ProbeMode::Direct);
        assert_eq!(a.probe_concurrency, 50);
        assert_eq!(a.probe_timeout, Duration::from_secs(5));
        assert_eq!(a.resync_interval, Duration::from_secs(30));
        assert_eq!(a.log_format, LogFormat::Plain);
    }

    #[test]
    fn parses_every_flag() {
        let a = Args::try_parse_from([
            "op",
            "--leader-election",
            "false",
            "--probe",
            "port-forward",
            "--probe-timeout",
            "1500ms",
            "--log-format",
            "json",
            "--resync-interval",
            "1m",
        ])
        .unwrap();
        assert!(!a.leader_election);
        assert_eq!(a.probe, ProbeMode::PortForward);
        assert_eq!(a.probe_timeout, Duration::from_millis(1500));
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.resync_interval, Duration::from_secs(60));
        assert!(Args::try_parse_from(["op", "--probe-timeout", "1h30m"]).is_err());
    }

    fn refused(flag: &str, value: &str) -> String {
        Args::try_parse_from(["op", flag, value])
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn durations_and_counts_outside_their_bounds_are_clear_errors() {
        let e = refused("--lease-duration", "1s");
        assert!(
            e.contains("--lease-duration") && e.contains("shorter than the minimum of 2s"),
            "{e}"
        );
        let e = refused("--lease-duration", "10m");
        assert!(e.contains("longer than the maximum of 5m"), "{e}");
        let e = refused("--resync-interval", "500ms");
        assert!(
            e.contains("--resync-interval") && e.contains("minimum of 1s"),
            "{e}"
        );
        let e = refused("--probe-timeout", "10ms");
        assert!(
            e.contains("--probe-timeout") && e.contains("minimum of 100ms"),
            "{e}"
        );
        let e = refused("--probe-timeout", "1m");
        assert!(e.contains("maximum of 30s"), "{e}");
        let e = refused("--probe-concurrency", "0");
        assert!(e.contains("--probe-concurrency"), "{e}");
        let e = refused("--resync-interval", "1h30m");
        assert!(e.contains("compound values"), "{e}");
        let a = Args::try_parse_from(["op", "--lease-duration", "2s", "--resync-interval", "1s"])
            .unwrap();
        assert_eq!(a.lease_duration, Duration::from_secs(2));
    }
}

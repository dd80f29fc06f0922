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

fn duration(s: &str) -> Result<Duration, String> {
    trust_rotation_crds::parse_proxy_duration(s)
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

    /// How long a leader's Lease lasts without renewal.
    #[arg(long, env = "TRUST_ROTATION_LEASE_DURATION", default_value = "15s", value_parser = duration, hide = true)]
    pub lease_duration: Duration,

    /// How proxies are probed: dial <podIP>:4191 directly, or tunnel through the API server.
    #[arg(
        long,
        env = "TRUST_ROTATION_PROBE",
        value_enum,
        default_value = "direct"
    )]
    pub probe: ProbeMode,

    /// Proxies probed at once.
    #[arg(long, env = "TRUST_ROTATION_PROBE_CONCURRENCY", default_value_t = 50)]
    pub probe_concurrency: usize,

    /// Per-proxy probe timeout (digits and one unit: ms, s, m, h).
    #[arg(long, env = "TRUST_ROTATION_PROBE_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub probe_timeout: Duration,

    /// How often every rotation is looked at even when nothing changed.
    #[arg(long, env = "TRUST_ROTATION_RESYNC_INTERVAL", default_value = "30s", value_parser = duration)]
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
}

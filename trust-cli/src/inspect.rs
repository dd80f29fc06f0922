//! `linkerd trust inspect`: where the rotation is, and which meshed pods have not converged
//! (and why), judged by the same code the operator uses (`trust_rotation_steps::convergence`).

use crate::client::{explain, explain_read, is_fatal};
use crate::goflags::parse_duration_flag;
use crate::names::{OperatorNames, PkiNames};
use anyhow::Context as _;
use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;
use std::io::IsTerminal;
use std::time::Duration;
use trust_rotation_crds::Convergence;
use trust_rotation_steps::bundle::Bundle;
use trust_rotation_steps::convergence::{
    bundle_convergence, bundle_state, cert_convergence, cert_state, cert_state_under, BundleState,
    CertState, Converged,
};
use trust_rotation_steps::observe::{list_meshed_pods, MeshedPod, PodRef};
use trust_rotation_steps::pki::short_fingerprint;
use trust_rotation_steps::probe::{probe_pods, ProbeConfig, ProbeMode};
use trust_rotation_steps::read;
use trust_rotation_steps::rotation::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectOutput {
    Table,
    Wide,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// Output format: table, wide or json (the JSON schema is documented in trust-cli/README.md)
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: InspectOutput,
    /// Probe at most this many proxies at once
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Give up on a proxy after this long (e.g. 10s, 500ms)
    #[arg(long, default_value = "10s", value_parser = parse_duration_flag, value_name = "DURATION")]
    pub timeout: Duration,
    /// How to reach proxies: through the API server (port-forward) or straight to pod IPs
    /// (direct, in-cluster only)
    #[arg(long, value_enum, default_value = "port-forward")]
    pub probe: ProbeMode,
    /// Skip probing live certificates (bundle state only)
    #[arg(long)]
    pub no_probe: bool,
    #[command(flatten)]
    pub names: PkiNames,
    #[command(flatten)]
    pub operator: OperatorNames,
}

/// Counts, as JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub converged: u32,
    pub target: u32,
    pub summary: String,
}

impl From<&Convergence> for Counts {
    fn from(c: &Convergence) -> Self {
        Counts {
            converged: c.converged,
            target: c.target,
            summary: c.summary.clone(),
        }
    }
}

/// One unconverged pod.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    pub namespace: String,
    pub pod: String,
    pub owner: Option<String>,
    /// `status.podIP`, null before the pod has one.
    pub ip: Option<String>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// `current`, `stale` or `no-proxy`.
    pub bundle: &'static str,
    /// `active`, `other-issuer`, `unreachable`, `timed-out`, `no-proxy`, `invalid`, or
    /// `not-probed` with `--no-probe` (`trusted` pods are healthy and never listed).
    pub certificate: &'static str,
    /// Issuer fingerprint (other-issuer) or the reason (unreachable, invalid).
    pub certificate_detail: Option<String>,
    /// When the certificate the proxy presented expires (RFC 3339), null when none was read.
    pub certificate_expires: Option<String>,
    /// The proxy's version (the injector's `linkerd.io/proxy-version`, else the image tag).
    pub proxy_version: Option<String>,
    pub fix: String,
}

/// The whole report; `--output json` prints exactly this.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub rotation: String,
    /// Phase from the TrustAnchorRotation status; null when it cannot be read.
    pub phase: Option<String>,
    pub blocking_message: Option<String>,
    /// Why the TrustAnchorRotation could not be read, if it could not.
    pub rotation_error: Option<String>,
    /// Convergence as the operator last recorded it.
    pub recorded: RecordedCounts,
    /// Convergence observed now by this command.
    pub observed: ObservedCounts,
    pub active_issuer: String,
    /// Healthy pods whose certificate comes from a previous issuer under the current trust
    /// anchor (outside a rotation's RenewingWorkloadCerts); null when there are none.
    pub previous_issuer: Option<PreviousIssuer>,
    pub pods: Vec<PodRow>,
}

/// Pods still on a previous issuer that chains to the current trust anchor: nothing to do,
/// their proxies renew by themselves.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviousIssuer {
    pub pods: u32,
    /// When the last of their certificates expires (each renews before).
    pub renewed_by: String,
}

/// Whether a pod must hold a certificate from the active issuer to be converged: only during
/// a rotation, from RenewingWorkloadCerts (AccelerateRefresh started) on. Before that, and
/// when Synced, any issuer under a root of the bundle is healthy.
pub fn judges_by_active_issuer(
    status: Option<&trust_rotation_crds::TrustAnchorRotationStatus>,
) -> bool {
    status.is_some_and(|s| {
        s.rotation.is_some()
            && s.steps.iter().any(|r| {
                r.name == names::ACCELERATE_REFRESH
                    && r.state != trust_rotation_crds::StepState::Pending
            })
    })
}

fn previous_issuer(judged: &[(MeshedPod, CertState)]) -> Option<PreviousIssuer> {
    let expiries: Vec<jiff::Timestamp> = judged
        .iter()
        .filter_map(|(_, s)| match s {
            CertState::Trusted { expires, .. } => Some(*expires),
            _ => None,
        })
        .collect();
    let latest = expiries.iter().max()?;
    Some(PreviousIssuer {
        pods: expiries.len() as u32,
        renewed_by: latest.to_string(),
    })
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RecordedCounts {
    pub trust_bundle: Option<Counts>,
    pub workload_certificates: Option<Counts>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedCounts {
    pub trust_bundle: Counts,
    /// Null with `--no-probe`.
    pub workload_certificates: Option<Counts>,
}

/// The fix for a pod in these states.
pub fn fix_for(pod: &MeshedPod, bundle: BundleState, cert: Option<&CertState>) -> String {
    match (bundle, cert) {
        (BundleState::Stale | BundleState::NoProxy, _)
        | (_, Some(CertState::OtherIssuer { .. })) => pod.restart_command(),
        (_, Some(CertState::Unreachable(_) | CertState::TimedOut | CertState::Invalid(_))) => {
            format!(
                "kubectl -n {} logs {} -c linkerd-proxy",
                pod.pod.namespace, pod.pod.name
            )
        }
        _ => String::new(),
    }
}

/// What the probe of one pod found: the verdict and when the presented certificate expires.
pub type Probed = (CertState, Option<jiff::Timestamp>);

/// Builds the rows of unconverged workload pods, in namespace/name order.
pub fn rows(
    pods: &[MeshedPod],
    probes: Option<&[(MeshedPod, Probed)]>,
    bundle_value: &str,
) -> Vec<PodRow> {
    let by_pod: Option<std::collections::HashMap<&PodRef, &Probed>> =
        probes.map(|ps| ps.iter().map(|(p, s)| (&p.pod, s)).collect());
    let mut out: Vec<PodRow> = Vec::new();
    for pod in pods.iter().filter(|p| p.is_workload()) {
        let b = bundle_state(pod, bundle_value);
        let probed = by_pod.as_ref().map(|m| {
            m.get(&pod.pod)
                .map(|(s, expires)| ((*s).clone(), *expires))
                .unwrap_or((CertState::Unreachable("not probed".into()), None))
        });
        let c = probed.as_ref().map(|(s, _)| s);
        let cert_ok = c.is_none_or(|c| c.is_converged());
        if b.is_converged() && cert_ok {
            continue;
        }
        out.push(PodRow {
            namespace: pod.pod.namespace.clone(),
            pod: pod.pod.name.clone(),
            owner: pod.owner.clone(),
            ip: pod.ip.clone(),
            ready: pod.ready,
            bundle: b.as_str(),
            certificate: c.map(CertState::as_str).unwrap_or("not-probed"),
            certificate_detail: c.and_then(|c| c.detail().map(str::to_string)),
            certificate_expires: probed
                .as_ref()
                .and_then(|(_, e)| *e)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            proxy_version: pod.proxy_version.as_deref().map(str::to_string),
            fix: fix_for(pod, b, c),
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    out
}

fn cert_cell(row: &PodRow, wide: bool) -> String {
    match (row.certificate, row.certificate_detail.as_deref()) {
        ("other-issuer", Some(fp)) if !wide => format!("old issuer {}", short_fingerprint(fp)),
        ("other-issuer", Some(fp)) => format!("old issuer {fp}"),
        ("other-issuer", None) => "old issuer".into(),
        ("active", _) => "active issuer".into(),
        ("timed-out", _) => "timed out".into(),
        ("no-proxy", _) => "no proxy".into(),
        ("not-probed", _) => "not probed".into(),
        (state, Some(detail)) if wide => format!("{state}: {detail}"),
        (state, _) => state.into(),
    }
}

/// The human rendering.
pub fn render_text(report: &Report, wide: bool) -> String {
    let mut out = String::new();
    let phase = report.phase.as_deref().unwrap_or("unknown");
    // What stops the rotation comes first: it is what a person must act on.
    if let Some(m) = &report.blocking_message {
        out.push_str(&format!("Blocked:             {m}\n"));
    }
    out.push_str(&format!("TrustAnchorRotation: {}\n", report.rotation));
    out.push_str(&format!("Phase:               {phase}\n"));
    if let Some(e) = &report.rotation_error {
        out.push_str(&format!("                     ({e})\n"));
    }
    let rec = |c: &Option<Counts>| {
        c.as_ref()
            .map(|c| c.summary.clone())
            .unwrap_or_else(|| "-".into())
    };
    out.push_str(&format!(
        "Trust bundle:        {} pods current (recorded by the operator: {})\n",
        report.observed.trust_bundle.summary,
        rec(&report.recorded.trust_bundle)
    ));
    match &report.observed.workload_certificates {
        Some(c) => out.push_str(&format!(
            "Workload certs:      {} pods on the active issuer{} (recorded by the operator: {})\n",
            c.summary,
            if report.previous_issuer.is_some() {
                " or a previous one under the trust anchor"
            } else {
                ""
            },
            rec(&report.recorded.workload_certificates)
        )),
        None => out.push_str(&format!(
            "Workload certs:      not probed (recorded by the operator: {})\n",
            rec(&report.recorded.workload_certificates)
        )),
    }
    if let Some(p) = &report.previous_issuer {
        out.push_str(&format!(
            "                     ({} on a previous issuer: healthy, their proxies renew by themselves by {})\n",
            p.pods, p.renewed_by
        ));
    }
    out.push_str(&format!(
        "Active issuer:       {}\n",
        if wide {
            report.active_issuer.as_str()
        } else {
            short_fingerprint(&report.active_issuer)
        }
    ));
    out.push('\n');
    if report.pods.is_empty() {
        out.push_str("All meshed pods have converged.\n");
        return out;
    }
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    let mut header = vec!["NAMESPACE", "POD", "OWNER"];
    if wide {
        header.extend(["IP", "READY", "PROXY", "EXPIRES"]);
    }
    header.extend(["BUNDLE", "CERTIFICATE", "FIX"]);
    table.set_header(header);
    for r in &report.pods {
        let mut row = vec![
            r.namespace.clone(),
            r.pod.clone(),
            r.owner.clone().unwrap_or_else(|| "-".into()),
        ];
        if wide {
            row.push(r.ip.clone().unwrap_or_else(|| "-".into()));
            row.push(if r.ready { "true" } else { "false" }.into());
            row.push(r.proxy_version.clone().unwrap_or_else(|| "-".into()));
            row.push(r.certificate_expires.clone().unwrap_or_else(|| "-".into()));
        }
        row.extend([
            match r.bundle {
                "no-proxy" => "no proxy".to_string(),
                other => other.to_string(),
            },
            cert_cell(r, wide),
            r.fix.clone(),
        ]);
        table.add_row(row);
    }
    for line in table.to_string().lines() {
        // comfy-table pads every cell by one space; drop the leading one, as kubectl does.
        let line = line.strip_prefix(' ').unwrap_or(line);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!("\n{} pod(s) not converged.\n", report.pods.len()));
    out
}

/// Gathers the report.
pub async fn inspect(
    client: &kube::Client,
    linkerd_ns: &str,
    args: &InspectArgs,
) -> anyhow::Result<Report> {
    // Three independent reads, at once, through the shared read layer: the rotation's
    // recorded state (optional: the table is useful without the operator), the bundle and
    // the active issuer.
    let names = &args.names;
    let rotation_name = &args.operator.rotation;
    let (roots, issuer_ref) = (names.roots_ref(linkerd_ns), names.issuer_ref(linkerd_ns));
    let (tar, bundle_value, issuer) = tokio::join!(
        read::rotation(client, rotation_name),
        read::trust_bundle_value(client, &roots),
        read::issuer_chain(client, &issuer_ref),
    );
    let (status, spec_trust_domain, rotation_error) = match tar {
        Ok(t) => (t.status, Some(t.spec.trust_domain), None),
        Err(e) if e.is_missing() => (
            None,
            None,
            Some(format!(
                "TrustAnchorRotation {rotation_name} not found: is the operator installed?"
            )),
        ),
        Err(e) => {
            let msg = explain_read(&e);
            if e.kube_error().is_some_and(is_fatal) {
                anyhow::bail!(msg);
            }
            (None, None, Some(msg))
        }
    };
    let bundle_value =
        bundle_value.map_err(|e| anyhow::anyhow!(explain_read(&e.or_pass("--trust-roots"))))?;
    let active_issuer = issuer
        .map_err(|e| anyhow::anyhow!(explain_read(&e.or_pass("--identity-issuer-secret"))))?
        .swap_remove(0);

    let pods = list_meshed_pods(client, linkerd_ns)
        .await
        .map_err(|e| anyhow::anyhow!(explain(e.kube(), "listing meshed pods")))?;
    let workloads: Vec<MeshedPod> = pods.iter().filter(|p| p.is_workload()).cloned().collect();

    let probes = if args.no_probe {
        None
    } else {
        let cfg = ProbeConfig {
            mode: args.probe,
            concurrency: usize::from(args.concurrency),
            timeout: args.timeout,
            trust_domain: trust_domain(&spec_trust_domain),
            linkerd_ns: linkerd_ns.to_string(),
        };
        let show_bar = args.output != InspectOutput::Json && std::io::stderr().is_terminal();
        let bar = if show_bar {
            let bar = indicatif::ProgressBar::new(workloads.len() as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "probing proxies {bar:30} {pos}/{len} {elapsed}",
            ) {
                bar.set_style(style);
            }
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        // Each answer is judged in its probe's task, alongside the probes still in flight.
        let judge_by = active_issuer.clone();
        let strict = judges_by_active_issuer(status.as_ref());
        let roots = Bundle::parse(&bundle_value)
            .map(|b| b.certs().to_vec())
            .unwrap_or_default();
        let results = probe_pods(
            client,
            workloads,
            &cfg,
            move |o| {
                let state = if strict {
                    cert_state(&o, &judge_by)
                } else {
                    cert_state_under(&o, &judge_by, &roots)
                };
                (state, o.leaf_not_after())
            },
            |_, _| bar.inc(1),
        )
        .await;
        bar.finish_and_clear();
        Some(results)
    };

    let bundle_tally = bundle_convergence(&pods, &bundle_value);
    let judged: Option<Vec<(MeshedPod, CertState)>> = probes.as_ref().map(|ps| {
        ps.iter()
            .map(|(p, (state, _))| (p.clone(), state.clone()))
            .collect()
    });
    let cert_tally = judged.as_deref().map(cert_convergence);
    let status_ref = status.as_ref();
    Ok(Report {
        rotation: args.operator.rotation.clone(),
        phase: status_ref.and_then(|s| s.phase).map(|p| p.to_string()),
        blocking_message: status_ref
            .and_then(|s| s.blocking_message.clone())
            .filter(|m| !m.is_empty()),
        rotation_error,
        recorded: RecordedCounts {
            trust_bundle: status_ref
                .and_then(|s| s.trust_bundle.as_ref())
                .map(Counts::from),
            workload_certificates: status_ref
                .and_then(|s| s.workload_certificates.as_ref())
                .map(Counts::from),
        },
        observed: ObservedCounts {
            trust_bundle: Counts::from(&bundle_tally.to_status(None)),
            workload_certificates: cert_tally
                .as_ref()
                .map(|t| Counts::from(&t.to_status(None))),
        },
        active_issuer: active_issuer.fingerprint().to_string(),
        previous_issuer: judged.as_deref().and_then(previous_issuer),
        pods: rows(&pods, probes.as_deref(), &bundle_value),
    })
}

fn trust_domain(from_spec: &Option<String>) -> String {
    from_spec
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| trust_rotation_crds::DEFAULT_TRUST_DOMAIN.to_string())
}

/// Prints the report in the requested format.
pub fn render(report: &Report, output: InspectOutput) -> anyhow::Result<String> {
    Ok(match output {
        InspectOutput::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(report).context("rendering JSON")?
        ),
        InspectOutput::Table => render_text(report, false),
        InspectOutput::Wide => render_text(report, true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let counts = |c: u32, t: u32| Counts {
            converged: c,
            target: t,
            summary: format!("{c}/{t}"),
        };
        Report {
            rotation: "cluster".into(),
            phase: Some("RenewingWorkloadCerts".into()),
            blocking_message: Some("2 pods still use the old issuer".into()),
            rotation_error: None,
            recorded: RecordedCounts {
                trust_bundle: Some(counts(2, 2)),
                workload_certificates: Some(counts(0, 2)),
            },
            observed: ObservedCounts {
                trust_bundle: counts(2, 2),
                workload_certificates: Some(counts(0, 2)),
            },
            active_issuer: "ab".repeat(32),
            previous_issuer: None,
            pods: vec![
                PodRow {
                    namespace: "emojivoto".into(),
                    pod: "web-1".into(),
                    owner: Some("deployment/web".into()),
                    ip: Some("127.1.0.2".into()),
                    ready: true,
                    bundle: "current",
                    certificate: "other-issuer",
                    certificate_detail: Some("cd".repeat(32)),
                    certificate_expires: Some("2026-12-03T10:00:00Z".into()),
                    proxy_version: Some("edge-24.11.8".into()),
                    fix: "kubectl -n emojivoto rollout restart deployment/web".into(),
                },
                PodRow {
                    namespace: "emojivoto".into(),
                    pod: "emoji-1".into(),
                    owner: None,
                    ip: None,
                    ready: false,
                    bundle: "current",
                    certificate: "timed-out",
                    certificate_detail: None,
                    certificate_expires: None,
                    proxy_version: None,
                    fix: "kubectl -n emojivoto logs emoji-1 -c linkerd-proxy".into(),
                },
            ],
        }
    }

    #[test]
    fn table_shows_state_reason_and_fix() {
        let text = render(&report(), InspectOutput::Table).unwrap();
        let expected = "\
Blocked:             2 pods still use the old issuer
TrustAnchorRotation: cluster
Phase:               RenewingWorkloadCerts
Trust bundle:        2/2 pods current (recorded by the operator: 2/2)
Workload certs:      0/2 pods on the active issuer (recorded by the operator: 0/2)
Active issuer:       abababababab

NAMESPACE  POD      OWNER           BUNDLE   CERTIFICATE              FIX
emojivoto  web-1    deployment/web  current  old issuer cdcdcdcdcdcd  kubectl -n emojivoto rollout restart deployment/web
emojivoto  emoji-1  -               current  timed out                kubectl -n emojivoto logs emoji-1 -c linkerd-proxy

2 pod(s) not converged.
";
        assert_eq!(text, expected);
        let wide = render(&report(), InspectOutput::Wide).unwrap();
        assert!(wide.contains(&format!("old issuer {}", "cd".repeat(32))));
        assert!(wide.contains("127.1.0.2"));
        assert!(wide.contains(&"ab".repeat(32)));
        assert!(wide.contains("PROXY") && wide.contains("EXPIRES"), "{wide}");
        assert!(
            wide.contains("edge-24.11.8") && wide.contains("2026-12-03T10:00:00Z"),
            "{wide}"
        );
    }

    #[test]
    fn json_keys_are_the_documented_ones() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&report(), InspectOutput::Json).unwrap()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&v),
            [
                "activeIssuer",
                "blockingMessage",
                "observed",
                "phase",
                "pods",
                "previousIssuer",
                "recorded",
                "rotation",
                "rotationError"
            ]
        );
        assert_eq!(
            keys(&v["pods"][0]),
            [
                "bundle",
                "certificate",
                "certificateDetail",
                "certificateExpires",
                "fix",
                "ip",
                "namespace",
                "owner",
                "pod",
                "proxyVersion",
                "ready"
            ]
        );
        assert_eq!(
            keys(&v["observed"]["trustBundle"]),
            ["converged", "summary", "target"]
        );
        assert_eq!(v["pods"][1]["certificate"], "timed-out");
    }

    #[test]
    fn all_converged_says_so() {
        let mut r = report();
        r.pods.clear();
        r.blocking_message = None;
        let text = render(&r, InspectOutput::Table).unwrap();
        assert!(text.ends_with("\nAll meshed pods have converged.\n"));
        assert!(!text.contains("Blocked"));
    }

    #[test]
    fn pods_on_a_previous_issuer_are_healthy_with_when_they_renew() {
        let mut r = report();
        r.pods.clear();
        r.blocking_message = None;
        r.phase = Some("Synced".into());
        r.previous_issuer = Some(PreviousIssuer {
            pods: 2,
            renewed_by: "2026-12-03T10:00:00Z".into(),
        });
        let text = render(&r, InspectOutput::Table).unwrap();
        assert!(
            text.contains("pods on the active issuer or a previous one under the trust anchor"),
            "{text}"
        );
        assert!(
            text.contains("(2 on a previous issuer: healthy, their proxies renew by themselves by 2026-12-03T10:00:00Z)"),
            "{text}"
        );
        assert!(text.ends_with("\nAll meshed pods have converged.\n"));
    }

    #[test]
    fn only_renewing_workload_certs_and_later_judge_by_the_active_issuer() {
        use trust_rotation_crds::{Phase, StepRecord, StepState, TrustAnchorRotationStatus};
        assert!(!judges_by_active_issuer(None));
        let at = |state: StepState| TrustAnchorRotationStatus {
            phase: Some(Phase::RenewingWorkloadCerts),
            rotation: Some(trust_rotation_crds::RotationRecord {
                id: "r".into(),
                trigger: "t".into(),
                from_anchor: None,
                to_anchor: None,
                superseded_anchors: vec![],
                started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
                finished_at: None,
                trace_parent: None,
                issuer_renewal: None,
                approvals: Vec::new(),
            }),
            steps: vec![StepRecord {
                name: names::ACCELERATE_REFRESH.into(),
                phase: Phase::RenewingWorkloadCerts,
                state,
                attempts: 0,
                started_at: None,
                finished_at: None,
                last_progress_time: None,
                message: None,
            }],
            ..Default::default()
        };
        assert!(!judges_by_active_issuer(Some(&at(StepState::Pending))));
        assert!(judges_by_active_issuer(Some(&at(StepState::Waiting))));
        assert!(judges_by_active_issuer(Some(&at(StepState::Done))));
        let synced = TrustAnchorRotationStatus {
            phase: Some(Phase::Synced),
            ..Default::default()
        };
        assert!(!judges_by_active_issuer(Some(&synced)));
    }
}

//! `linkerd trust plan [-o table|json]`: what the next (or the current) rotation does before
//! it does it, from the same decision the operator takes (`trust_rotation_steps::plan`, over
//! `restarts::decide`).

use crate::client::{explain, explain_read};
use anyhow::Context as _;
use comfy_table::{presets, ContentArrangement, Table};
use trust_rotation_steps::pki::short_fingerprint;
use trust_rotation_steps::plan::{self, human_duration, Plan, PlanError, RestartBy};
use trust_rotation_steps::read;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanOutput {
    Table,
    Json,
}

/// `plan --help`: what the plan shows and how its figures are derived.
pub const LONG_ABOUT: &str =
    "Show what the next rotation (or the one in progress) does, before it does it: the \
trust anchor and identity issuer it moves to and when cert-manager renews them (and, with \
spec.automation.schedule, when the operator renews the anchor itself and when the next maintenance \
window opens); every meshed \
Deployment, StatefulSet and DaemonSet outside the control plane in the order the operator \
restarts them (spec.automation.workloadRestarts: Automatic), with its rollout strategy, replicas, \
PodDisruptionBudget headroom, last rollout duration and the operator's decision; the pods the \
operator does not handle by itself (bare pods, Job and CronJob pods, PodDisruptionBudgets that \
never allow a disruption, OnDelete, workloads outside the automation's selectors or skipped with \
linkerd trust skip) and the command a person runs for each; and an estimated duration.\n\n\
The decision and the order are computed by the operator's own code, so the operator restarts \
exactly these workloads in this order (a workload whose PodDisruptionBudget allows no disruption \
at the moment waits, and later ones may go first). During a rotation, each workload shows its \
progress per restart step from status.workloadRestarts.\n\n\
LAST ROLLOUT is derived for Deployments only: from the creation of its newest ReplicaSet to the \
lastUpdateTime of its Progressing condition with reason NewReplicaSetAvailable; '-' when unknown \
(StatefulSets, DaemonSets, a rollout in progress). The estimate counts three restarts of every \
workload (AwaitPropagation, AccelerateRefresh, AwaitPropagationReduced) in batches of \
maxConcurrentWorkloads, each batch its slowest last rollout (60s when unknown) plus 4s of the \
operator's looks, three control-plane restarts, and one look per step; it leaves out what a \
person does, waits for PodDisruptionBudgets and time parked outside maintenance windows. The \
JSON document is described in \
trust-cli/README.md.";

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Output format: table or json (the JSON schema is documented in trust-cli/README.md)
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: PlanOutput,
    /// The TrustAnchorRotation to plan for
    #[arg(long, default_value = trust_rotation_crds::DEFAULT_ROTATION_NAME, value_name = "NAME")]
    pub rotation: String,
}

/// Reads the cluster and makes the plan.
pub async fn plan(client: &kube::Client, linkerd_ns: &str, rotation: &str) -> anyhow::Result<Plan> {
    let tar = read::rotation(client, rotation)
        .await
        .map_err(|e| anyhow::anyhow!(explain_read(&e.or_pass("--rotation"))))?;
    let inputs = plan::gather(client, linkerd_ns, tar)
        .await
        .map_err(|e| match e {
            PlanError::Read(e) => anyhow::anyhow!(explain_read(&e)),
            PlanError::Observe(e) => anyhow::anyhow!(explain(e.kube(), "listing meshed pods")),
            PlanError::Step(e) => anyhow::anyhow!("{e}"),
        })?;
    Ok(plan::build(&inputs))
}

/// Prints the plan in the requested format.
pub fn render(plan: &Plan, output: PlanOutput) -> anyhow::Result<String> {
    Ok(match output {
        PlanOutput::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(plan).context("rendering JSON")?
        ),
        PlanOutput::Table => render_text(plan),
    })
}

fn table(header: Vec<&str>, rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for r in rows {
        t.add_row(r);
    }
    let mut out = String::new();
    for line in t.to_string().lines() {
        // comfy-table pads every cell by one space; drop the leading one, as kubectl does.
        let line = line.strip_prefix(' ').unwrap_or(line);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn short(fp: Option<&str>) -> String {
    fp.map(|f| short_fingerprint(f).to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn cert_line(c: &plan::CertificatePlan) -> String {
    format!(
        "{} {} (valid until {})",
        c.certificate,
        short(c.fingerprint.as_deref()),
        c.not_after.as_deref().unwrap_or("unknown")
    )
}

/// The human rendering.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: &str| out.push_str(&format!("{k:<20} {v}\n"));
    line(
        &mut out,
        "TrustAnchorRotation:",
        &format!("{} (plan made {})", plan.rotation, plan.generated_at),
    );
    out.push_str("\nRotation\n");
    match &plan.in_progress {
        Some(r) => {
            line(
                &mut out,
                "In progress:",
                &format!(
                    "{} phase {} step {}, from anchor {} to {}",
                    r.id,
                    r.phase.as_deref().unwrap_or("-"),
                    r.current_step.as_deref().unwrap_or("-"),
                    short(r.from_anchor.as_deref()),
                    short(r.to_anchor.as_deref())
                ),
            );
            if let Some(m) = &r.blocking_message {
                line(&mut out, "Blocked:", m);
            }
        }
        None => line(
            &mut out,
            "In progress:",
            "none (Synced): this is the plan for the next rotation",
        ),
    }
    line(&mut out, "Trust anchor:", &cert_line(&plan.anchor));
    line(
        &mut out,
        "Next rotation:",
        &match &plan.anchor.renewal_time {
            Some(t) => format!("when cert-manager renews the anchor, at {t} (status.renewalTime), or at `linkerd trust renew anchor`"),
            None => "when the anchor is renewed (its Certificate has no status.renewalTime): `linkerd trust renew anchor`".into(),
        },
    );
    match &plan.schedule {
        Some(s) if s.error.is_some() => line(
            &mut out,
            "Schedule:",
            &format!(
                "invalid, the operator acts on none: {}",
                s.error.as_deref().unwrap_or_default()
            ),
        ),
        Some(s) => {
            line(
                &mut out,
                "Scheduled renewal:",
                &match (&s.anchor_renewal, &s.note) {
                    (Some(at), Some(note)) => format!(
                        "the operator renews the anchor at {at} (renewAnchorBefore {}: {note})",
                        s.renew_anchor_before.as_deref().unwrap_or("-")
                    ),
                    (Some(at), None) => format!("the operator renews the anchor at {at}"),
                    (None, Some(note)) => format!("none: {note}"),
                    (None, None) => {
                        "none (spec.automation.schedule.renewAnchorBefore is not set)".into()
                    }
                },
            );
            line(
                &mut out,
                "Maintenance window:",
                &match (&s.next_window, s.window_open, &s.window_closes) {
                    (None, _, _) => "none configured: the operator may act at any time".into(),
                    (Some(next), true, Some(closes)) => {
                        format!("open now until {closes}; the next opens {next}")
                    }
                    (Some(next), _, _) => format!(
                        "closed now; the next opens {next} (until then no restart starts, no issuer is re-issued, no root removed)"
                    ),
                },
            );
        }
        None => line(&mut out, "Schedule:", "unknown"),
    }
    line(
        &mut out,
        "Identity issuer:",
        &cert_line(&plan.issuer.certificate),
    );
    let by = match (&plan.issuer.command, plan.issuer.approval_required) {
        (Some(cmd), _) => format!("by a person: {cmd}"),
        (None, true) => {
            "by the operator, once approved: linkerd trust approve IssuerRenewal".into()
        }
        (None, false) => "by the operator, once every meshed pod trusts the new anchor".into(),
    };
    line(&mut out, "Issuer renewal:", &by);
    if !plan.approvals.is_empty() {
        let cmds: Vec<&str> = plan.approvals.iter().map(|a| a.command.as_str()).collect();
        line(&mut out, "Approvals:", &cmds.join("; "));
    }
    line(
        &mut out,
        "Workload restarts:",
        &if plan.workload_restarts == "Automatic" {
            format!(
                "Automatic, {} at a time, in the order below",
                plan.max_concurrent_workloads
            )
        } else {
            "Manual: a person restarts every workload below at each restart step".into()
        },
    );

    out.push_str("\nWorkloads\n");
    if plan.workloads.is_empty() {
        out.push_str("No meshed Deployment, StatefulSet or DaemonSet outside the control plane.\n");
    } else {
        let progress = plan.in_progress.is_some();
        let mut header = vec![
            "#",
            "KIND",
            "WORKLOAD",
            "STRATEGY",
            "REPLICAS",
            "PDB HEADROOM",
            "LAST ROLLOUT",
        ];
        if progress {
            header.push("PROGRESS");
        }
        header.push("DECISION");
        let rows = plan
            .workloads
            .iter()
            .map(|w| {
                let mut row = vec![
                    w.order.map_or("-".into(), |o| o.to_string()),
                    w.kind.clone(),
                    format!("{}/{}", w.namespace, w.name),
                    w.strategy.clone().unwrap_or_else(|| "-".into()),
                    w.replicas.map_or("-".into(), |r| r.to_string()),
                    match &w.budget {
                        None => "-".into(),
                        Some(b) if b.never => "none ever".into(),
                        Some(b) => b.disruptions_allowed.unwrap_or(0).to_string(),
                    },
                    w.last_rollout_seconds.map_or("-".into(), human_duration),
                ];
                if progress {
                    let states: Vec<String> = plan::RESTART_STEPS
                        .iter()
                        .map(|(step, _)| {
                            w.progress
                                .iter()
                                .find(|p| p.step == *step)
                                .map_or("-".into(), |p| p.state.clone())
                        })
                        .collect();
                    row.push(states.join("/"));
                }
                row.push(match (w.restart_by, &w.reason) {
                    (RestartBy::Operator, None) => "restarted by the operator".into(),
                    (RestartBy::Operator, Some(r)) => format!("restarted by the operator; {r}"),
                    (RestartBy::Skipped, r) => {
                        format!("skipped: {}", r.as_deref().unwrap_or("-"))
                    }
                    (RestartBy::Person, r) => {
                        format!("left to a person: {}", r.as_deref().unwrap_or("-"))
                    }
                });
                row
            })
            .collect();
        out.push_str(&table(header, rows));
        if progress {
            out.push_str(&format!(
                "(PROGRESS: {} from status.workloadRestarts)\n",
                plan::RESTART_STEPS
                    .iter()
                    .map(|(s, _)| *s)
                    .collect::<Vec<_>>()
                    .join("/")
            ));
        }
    }

    out.push_str("\nWhat a person must do\n");
    if plan.person.is_empty() {
        out.push_str("Nothing: the operator handles every meshed pod.\n");
    } else {
        let rows = plan
            .person
            .iter()
            .map(|a| {
                vec![
                    a.kind.clone(),
                    a.target.clone(),
                    a.reason.clone(),
                    a.command.clone(),
                ]
            })
            .collect();
        out.push_str(&table(vec!["KIND", "TARGET", "WHY", "COMMAND"], rows));
    }

    let e = &plan.estimate;
    out.push_str(&format!(
        "\nEstimated duration: {} (workload restarts {}, control plane {})\n",
        human_duration(e.seconds),
        human_duration(e.workload_restart_seconds),
        human_duration(e.control_plane_seconds)
    ));
    for a in &e.assumptions {
        out.push_str(&format!("  - {a}\n"));
    }
    out
}

//! AwaitPropagation: every meshed pod outside the control plane carries the current bundle
//! (annotation hash, or trimmed env), judged by the shared convergence module.

use super::invariant::Guarded;
use super::{refresh, POLL};
use crate::convergence::{bundle_convergence, BundleState, Tally};
use crate::observe::stuck_terminating;
use crate::pki::{short_fingerprint, Certificate};
use crate::snapshot::gone_if_stalled;
use crate::step::{Outcome, Progress, Step, StepContext, StepError, StepReport};
use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use trust_rotation_crds::Phase;

/// One command per workload that replaces the unconverged pods, with how many of its pods
/// wait for it when more than one, grouped by workload (at most `max`, then how many more).
pub fn restart_commands<S>(tally: &Tally<S>, max: usize) -> Vec<String> {
    let mut by_command: std::collections::BTreeMap<String, usize> = Default::default();
    for p in &tally.unconverged {
        *by_command.entry(p.meshed.restart_command()).or_default() += 1;
    }
    let total = by_command.len();
    let mut out: Vec<String> = by_command
        .into_iter()
        .take(max)
        .map(|(command, n)| {
            if n > 1 {
                format!("{command} ({n} pods)")
            } else {
                command
            }
        })
        .collect();
    if total > max {
        out.push(format!("and {} more workload(s)", total - max));
    }
    out
}

/// A block naming the pods the tally waits for that stay Terminating past their grace
/// period (waiting cannot help); `None` when there are none. The tally holds those pods
/// (looking each pod of the mesh up among them took a third of a look at 50,000 pods).
pub fn stuck_terminating_block<S>(tally: &Tally<S>, now: jiff::Timestamp) -> Option<Outcome> {
    stuck_terminating(tally.unconverged.iter().map(|p| &p.meshed), now).map(Outcome::blocked)
}

/// The decision of AwaitPropagation over what it observed.
///
/// `issuer_early` is `Some(issuer)` when the identity issuer already chains to the new root
/// although the expanded bundle has not reached every pod: proxies still holding only the old
/// root reject certificates from that issuer.
pub fn decide_propagation(
    tally: &Tally<BundleState>,
    issuer_early: Option<&Certificate>,
) -> Outcome {
    if tally.is_complete() {
        return Outcome::Done;
    }
    let missing = tally.target - tally.converged;
    let names: Vec<String> = tally
        .unconverged
        .iter()
        .take(10)
        .map(|p| p.pod.to_string())
        .collect();
    let commands = restart_commands(tally, 5);
    if let Some(issuer) = issuer_early {
        return Outcome::blocked(format!(
            "the identity issuer was re-issued under the new trust anchor (issuer {}, valid from {}) before every meshed pod \
             carried the expanded trust bundle: {missing} pod(s) ({}) trust only the old root and reject workload certificates \
             from the new issuer, so their mTLS breaks as they renew. Recover now by restarting them so they get the expanded \
             bundle: {}; the rotation continues by itself once every pod carries it",
            short_fingerprint(issuer.fingerprint()),
            issuer.not_before(),
            names.join(", "),
            commands.join("; ")
        ));
    }
    Outcome::wait(
        format!(
            "{}/{} meshed pods carry the current trust bundle; restart the rest so the injector gives them the new bundle: {} (pods: {})",
            tally.converged,
            tally.target,
            commands.join("; "),
            names.join(", ")
        ),
        POLL,
    )
}

/// Waits until every workload pod carries the current bundle.
pub struct AwaitPropagation {
    name: &'static str,
    phase: Phase,
    /// The expansion (old + new): also watches for an early issuer renewal and, when asked,
    /// publishes the refresh interval to namespaces.
    expanded: bool,
}

impl AwaitPropagation {
    pub fn new(name: &'static str, phase: Phase, expanded: bool) -> Self {
        Self {
            name,
            phase,
            expanded,
        }
    }
}

#[async_trait]
impl Step for AwaitPropagation {
    fn name(&self) -> &str {
        self.name
    }

    fn phase(&self) -> Phase {
        self.phase
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepReport, StepError> {
        // The bundle invariant first: nothing advances on a broken bundle.
        let guarded = crate::guarded!(ctx);
        let mut progress = guarded.progress();
        let mut drive = super::restarts::Drive::default();
        let outcome = self
            .execute(ctx, guarded, &mut progress, &mut drive)
            .await?;
        Ok(drive.report(self.name, outcome, progress))
    }
}

impl AwaitPropagation {
    /// Judges what the guard read (the bundle, the new anchor, the issuer, the pods): one
    /// snapshot for the invariant and the decision.
    async fn execute(
        &self,
        ctx: &StepContext,
        guarded: Guarded,
        progress: &mut Progress,
        drive: &mut super::restarts::Drive,
    ) -> Result<Outcome, StepError> {
        let Guarded {
            observed,
            expectation,
            mut pods,
        } = guarded;
        if self.expanded {
            // ReconcileBundle published it already; this catches namespaces that gained
            // meshed pods since.
            refresh::publish_env_to_meshed_namespaces(ctx, &pods).await?;
        }
        let mut tally = bundle_convergence(&pods, &observed.value);
        let gone = gone_if_stalled(ctx, self.name, &tally).await?;
        if !gone.is_empty() {
            pods.retain(|p| !gone.contains(&p.pod));
            tally = bundle_convergence(&pods, &observed.value);
        }
        progress.merge(Progress {
            trust_bundle: Some(tally.to_status(Some(Time(ctx.now)))),
            ..Default::default()
        });
        let mut early = None;
        if self.expanded && !tally.is_complete() {
            if let Some(i) = expectation.issuer.first() {
                progress.merge(Progress {
                    active_issuer: Some(i.summary()),
                    ..Default::default()
                });
                if i.is_signed_by(&expectation.to) {
                    early = Some(i.clone());
                }
            }
        }
        let decision = decide_propagation(&tally, early.as_ref());
        if matches!(decision, Outcome::Wait { .. }) {
            if let Some(block) = stuck_terminating_block(&tally, ctx.now) {
                return Ok(block);
            }
        }
        // spec.automation.workloadRestarts: restart what the message tells a person to.
        *drive = super::restarts::drive(
            ctx,
            self.name,
            &tally.unconverged,
            &pods,
            decision == Outcome::Done,
        )
        .await?;
        Ok(decision)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bundle::trust_root_sha256;
    use crate::observe::{MeshedPod, PodRef};
    use crate::pki::testing::{issued, root};

    pub(crate) fn pod(ns: &str, name: &str, bundle: Option<&str>) -> MeshedPod {
        MeshedPod::from(crate::observe::PodFacts {
            pod: PodRef::new(ns, name),
            owner: Some(format!(
                "deployment/{}",
                name.split('-').next().unwrap_or(name)
            )),
            service_account: "default".into(),
            ip: Some("127.0.10.1".into()),
            ready: true,
            deleting: false,
            deletion_deadline: None,
            proxy_version: None,
            control_plane: ns == "linkerd",
            has_proxy: true,
            trust_root_sha256: bundle.map(|b| trust_root_sha256(b).into()),
            trust_anchors_env: None,
            proxy_started_at: None,
            created_at: None,
            admin_port: trust_rotation_crds::defaults::PROXY_ADMIN_PORT,
        })
    }

    #[test]
    fn waits_naming_pods_and_restart_commands_then_done() {
        let b = "BUNDLE\n";
        let pods = vec![
            pod("emojivoto", "web-1", Some(b)),
            pod("emojivoto", "voting-1", Some("old\n")),
            pod("emojivoto", "voting-2", Some("old\n")),
            pod("linkerd", "linkerd-destination-1", None), // control plane: not counted
        ];
        let tally = bundle_convergence(&pods, b);
        let Outcome::Wait { reason, .. } = decide_propagation(&tally, None) else {
            panic!("expected to wait");
        };
        assert!(reason.starts_with("1/3 meshed pods"), "{reason}");
        assert!(
            reason.contains("kubectl -n emojivoto rollout restart deployment/voting"),
            "{reason}"
        );
        assert_eq!(
            reason.matches("rollout restart").count(),
            1,
            "one command per workload: {reason}"
        );
        assert!(
            reason.contains("rollout restart deployment/voting (2 pods)"),
            "with how many of its pods wait: {reason}"
        );
        assert!(reason.contains("emojivoto/voting-2"));
        let done = vec![pod("emojivoto", "web-1", Some(b))];
        assert_eq!(
            decide_propagation(&bundle_convergence(&done, b), None),
            Outcome::Done
        );
        // No meshed workloads at all: nothing to wait for.
        assert_eq!(
            decide_propagation(&bundle_convergence(&[], b), None),
            Outcome::Done
        );
    }

    #[test]
    fn early_issuer_renewal_blocks_with_recovery_and_clears_once_propagated() {
        let b = "BUNDLE\n";
        let new = root("root");
        let issuer = issued("identity", &new, true).parsed();
        let pods = vec![pod("emojivoto", "web-1", Some("old\n"))];
        let tally = bundle_convergence(&pods, b);
        let Outcome::Blocked { message } = decide_propagation(&tally, Some(&issuer)) else {
            panic!("expected a block");
        };
        assert!(
            message.contains("re-issued under the new trust anchor"),
            "{message}"
        );
        assert!(message.contains("emojivoto/web-1"), "{message}");
        assert!(
            message.contains("kubectl -n emojivoto rollout restart deployment/web"),
            "{message}"
        );
        let fixed = vec![pod("emojivoto", "web-1", Some(b))];
        assert_eq!(
            decide_propagation(&bundle_convergence(&fixed, b), Some(&issuer)),
            Outcome::Done
        );
    }

    #[test]
    fn a_pod_terminating_past_its_grace_period_blocks_naming_it_and_the_way_out() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let b = "BUNDLE\n";
        let mut slow = pod("emojivoto", "web-1", Some("old\n"));
        slow.deleting = true;
        // Within its grace period (and the slack after it): waited for.
        slow.deletion_deadline = Some(now - jiff::SignedDuration::from_secs(10));
        let pods = vec![slow.clone(), pod("emojivoto", "voting-1", Some(b))];
        let tally = bundle_convergence(&pods, b);
        assert_eq!(tally.unconverged.len(), 1, "a Terminating pod still counts");
        assert!(stuck_terminating_block(&tally, now).is_none());
        let Outcome::Wait { reason, .. } = decide_propagation(&tally, None) else {
            panic!("expected to wait");
        };
        assert!(
            reason.contains("wait for pod web-1 to finish terminating"),
            "{reason}"
        );
        // Long past it: blocked, naming the pod, why it counts and how to get it out.
        slow.deletion_deadline = Some(now - jiff::SignedDuration::from_secs(120));
        let pods = vec![slow, pod("emojivoto", "voting-1", Some(b))];
        let tally = bundle_convergence(&pods, b);
        let Some(Outcome::Blocked { message }) = stuck_terminating_block(&tally, now) else {
            panic!("expected a block");
        };
        assert!(
            message.contains("emojivoto/web-1 (grace period ended"),
            "{message}"
        );
        assert!(
            message.contains("kubectl -n emojivoto describe pod web-1"),
            "{message}"
        );
        assert!(
            message.contains("kubectl -n emojivoto delete pod web-1 --grace-period=0 --force"),
            "{message}"
        );
        // A converged Terminating pod is not waited for, stuck or not.
        let mut done = pod("emojivoto", "web-2", Some(b));
        done.deleting = true;
        done.deletion_deadline = Some(now - jiff::SignedDuration::from_secs(120));
        let pods = vec![done];
        assert!(stuck_terminating_block(&bundle_convergence(&pods, b), now).is_none());
    }

    #[test]
    fn many_workloads_are_summarised_after_five() {
        let b = "BUNDLE\n";
        let pods: Vec<MeshedPod> = (0..7)
            .map(|i| pod("emojivoto", &format!("app{i}-1"), Some("old\n")))
            .collect();
        let tally = bundle_convergence(&pods, b);
        let commands = restart_commands(&tally, 5);
        assert_eq!(commands.len(), 6, "{commands:?}");
        assert_eq!(commands[5], "and 2 more workload(s)");
        assert!(commands[0].ends_with("deployment/app0"), "{commands:?}");
    }
}

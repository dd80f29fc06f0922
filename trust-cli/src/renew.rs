//! `linkerd trust renew anchor|issuer`: what `cmctl renew` does — set the Certificate's
//! `Issuing` condition to `True` with reason `ManuallyTriggered` through the status
//! subresource — so that the walkthrough needs no other tool.

use crate::certmanager;
use crate::client::{explain, explain_read};
use crate::names::PkiNames;
use trust_rotation_crds::{
    Phase, RenewalMode, StepState, TrustAnchorRotation, TrustAnchorRotationStatus,
};
use trust_rotation_steps::pki::short_fingerprint;
use trust_rotation_steps::read;
use trust_rotation_steps::rotation::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The trust anchor (starts a rotation)
    Anchor,
    /// The identity issuer (step 3 of a rotation)
    Issuer,
}

pub use certmanager::{Renewed, RENEW_MESSAGE as MESSAGE, RENEW_REASON as REASON};

/// Sets `Issuing=True` on the Certificate `ns/name` ([`certmanager::renew`], shared with the
/// operator), with the CLI's explanation of what failed.
pub async fn trigger(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<Renewed> {
    let what = format!("Certificate {ns}/{name}");
    certmanager::renew(client, ns, name)
        .await
        .map_err(|e| match e {
            certmanager::RenewError::NotFound => anyhow::anyhow!(
            "{what} not found (is cert-manager's PKI installed? names can be overridden by flags)"
        ),
            certmanager::RenewError::Kube { doing, err } => {
                anyhow::anyhow!(explain(&err, &format!("{doing} {what}")))
            }
            certmanager::RenewError::Malformed(m) => anyhow::anyhow!("{what} {m}"),
            certmanager::RenewError::Conflicts => anyhow::anyhow!(
                "{what} kept changing while we tried to update it (5 conflicts); try again"
            ),
        })
}

/// Why renewing `target` now would break mTLS or undo a rotation in progress, given the
/// TrustAnchorRotation's status; `None` when it is safe (no rotation in progress, or the
/// rotation is where the user guide renews it).
pub fn refusal(target: Target, status: Option<&TrustAnchorRotationStatus>) -> Option<String> {
    let status = status?;
    let rotation = status.rotation.as_ref()?;
    let phase = status.phase.filter(|p| *p != Phase::Synced)?;
    let short = |fp: &Option<String>| {
        fp.as_deref()
            .map(|f| short_fingerprint(f).to_string())
            .unwrap_or_else(|| "?".into())
    };
    match target {
        Target::Anchor => Some(format!(
            "a trust-anchor rotation is already in progress (phase {phase}, from {} to {}): renewing the \
             anchor again makes the operator retarget it to the newest anchor and propagate the trust \
             bundle again, restarting every workload once more. Let it finish first (`linkerd trust \
             status --watch`)",
            short(&rotation.from_anchor),
            short(&rotation.to_anchor)
        )),
        Target::Issuer => {
            let at = status
                .steps
                .iter()
                .position(|s| s.name == names::AWAIT_ISSUER)?;
            let waiting = status.steps[..at]
                .iter()
                .find(|s| s.state != StepState::Done)?;
            Some(format!(
                "the trust-anchor rotation in progress is at {} (phase {phase}): not every meshed pod \
                 trusts the new anchor yet, so an identity issuer signed by it now would give new workload \
                 certificates that those pods reject. Renew the issuer when the phase is \
                 WaitingForIdentityRotation (`linkerd trust status --watch`)",
                waiting.name
            ))
        }
    }
}

/// Reads the TrustAnchorRotation; `None` when it (or its CRD) is not installed.
async fn read_rotation(
    client: &kube::Client,
    rotation: &str,
) -> anyhow::Result<Option<TrustAnchorRotation>> {
    match read::split_missing(read::rotation(client, rotation).await) {
        Ok(Ok(tar)) => Ok(Some(tar)),
        Ok(Err(_)) => Ok(None),
        Err(e) => anyhow::bail!(
            "{}; renewing needs to know whether a rotation is in progress (pass --rotation if it \
             has another name)",
            explain_read(&e)
        ),
    }
}

/// Runs the command and returns what to print. Refuses, unless `force`, what [`refusal`]
/// refuses.
pub async fn run(
    client: &kube::Client,
    linkerd_ns: &str,
    names: &PkiNames,
    target: Target,
    rotation: &str,
    force: bool,
) -> anyhow::Result<String> {
    let tar = read_rotation(client, rotation).await?;
    if let Some(why) = refusal(target, tar.as_ref().and_then(|t| t.status.as_ref())) {
        if !force {
            anyhow::bail!("refusing to renew: {why}; or pass --force");
        }
        eprintln!("Warning (--force): {why}");
    }
    let (ns, name) = match target {
        Target::Anchor => (
            names.cert_manager_namespace.as_str(),
            names.trust_anchor.as_str(),
        ),
        Target::Issuer => (linkerd_ns, names.identity_issuer.as_str()),
    };
    let outcome = trigger(client, ns, name).await?;
    let head = match outcome {
        Renewed::AlreadyIssuing => {
            format!("Certificate {ns}/{name} is already being re-issued; nothing changed.\n")
        }
        Renewed::Triggered => format!("Manually triggered issuance of Certificate {ns}/{name}\n"),
    };
    let automation = tar.map(|t| t.spec.automation).unwrap_or_default();
    let restarts_by_operator = automation.workload_restarts == RenewalMode::Automatic;
    let next = match target {
        Target::Anchor => format!(
            "\nWhat happens next: cert-manager issues a new trust anchor into Secret {ns}/{}. The operator then \
             copies the old anchor into {}, expands {linkerd_ns}/{} to hold both roots and restarts the control \
             plane (phases RefreshingControlPlane, then PropagatingTrustRoots). {} Follow progress with \
             `linkerd trust status --watch` or `linkerd trust inspect`.\n",
            names.anchor_secret(),
            trust_rotation_crds::DEFAULT_PREVIOUS_ANCHOR,
            names.trust_roots,
            match (restarts_by_operator, automation.issuer_renewal) {
                (true, RenewalMode::Automatic) => {
                    "It then restarts the meshed workloads and re-issues the identity issuer itself \
                     (spec.automation), in the order `linkerd trust plan` shows: nothing else to run, \
                     unless it asks for an approval."
                }
                (true, RenewalMode::Manual) => {
                    "It then restarts the meshed workloads itself (spec.automation.workloadRestarts), in the \
                     order `linkerd trust plan` shows; renew the identity issuer when the phase is \
                     WaitingForIdentityRotation (`linkerd trust renew issuer`)."
                }
                (false, _) => {
                    "Then restart your meshed workloads (e.g. `kubectl -n emojivoto rollout restart \
                     deploy`)."
                }
            },
        ),
        Target::Issuer => format!(
            "\nWhat happens next: cert-manager issues a new identity issuer signed by the new trust anchor. \
             The operator moves to RenewingWorkloadCerts and publishes an accelerated refresh interval; proxies \
             pick up certificates from the new issuer as they renew ({}). Follow progress with \
             `linkerd trust status --watch` or `linkerd trust inspect`.\n",
            if restarts_by_operator {
                "the operator also restarts the workloads, spec.automation.workloadRestarts"
            } else {
                "restart workloads to do it now"
            }
        ),
    };
    Ok(format!("{head}{next}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trust_rotation_crds::{RotationRecord, StepRecord};

    /// A rotation whose steps up to `at` (the step it waits in) are done.
    fn status_at(at: &str, phase: Phase) -> TrustAnchorRotationStatus {
        let mut before = true;
        let steps = trust_rotation_steps::rotation::workflow()
            .steps()
            .iter()
            .map(|s| {
                let state = if s.name() == at {
                    before = false;
                    StepState::Waiting
                } else if before {
                    StepState::Done
                } else {
                    StepState::Pending
                };
                StepRecord {
                    name: s.name().into(),
                    phase,
                    state,
                    attempts: 1,
                    started_at: None,
                    finished_at: None,
                    last_progress_time: None,
                    message: None,
                }
            })
            .collect();
        TrustAnchorRotationStatus {
            phase: Some(phase),
            steps,
            rotation: Some(RotationRecord {
                id: "r".into(),
                trigger: "trust anchor renewed".into(),
                from_anchor: Some("aa".repeat(32)),
                to_anchor: Some("bb".repeat(32)),
                superseded_anchors: Vec::new(),
                started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
                finished_at: None,
                trace_parent: None,
                issuer_renewal: None,
                approvals: Vec::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_is_refused_without_a_rotation_in_progress() {
        assert_eq!(refusal(Target::Anchor, None), None);
        assert_eq!(refusal(Target::Issuer, None), None);
        let synced = TrustAnchorRotationStatus {
            phase: Some(Phase::Synced),
            ..Default::default()
        };
        assert_eq!(refusal(Target::Anchor, Some(&synced)), None);
        assert_eq!(refusal(Target::Issuer, Some(&synced)), None);
    }

    #[test]
    fn the_issuer_is_refused_until_every_pod_trusts_the_new_anchor() {
        let propagating = status_at(names::AWAIT_PROPAGATION, Phase::PropagatingTrustRoots);
        let why = refusal(Target::Issuer, Some(&propagating)).expect("refused");
        assert!(why.contains("AwaitPropagation") && why.contains("WaitingForIdentityRotation"));
        let waiting = status_at(names::AWAIT_ISSUER, Phase::WaitingForIdentityRotation);
        assert_eq!(refusal(Target::Issuer, Some(&waiting)), None);
        let later = status_at(names::REDUCE_BUNDLE, Phase::RemovingOldTrustRoots);
        assert_eq!(refusal(Target::Issuer, Some(&later)), None);
    }

    #[test]
    fn the_anchor_is_refused_while_a_rotation_is_in_progress() {
        let waiting = status_at(names::AWAIT_ISSUER, Phase::WaitingForIdentityRotation);
        let why = refusal(Target::Anchor, Some(&waiting)).expect("refused");
        assert!(
            why.contains("already in progress") && why.contains("aaaaaaaa"),
            "{why}"
        );
    }
}

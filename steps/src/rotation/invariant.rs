//! The one bundle invariant of a rotation, and what to do when the cluster breaks it.
//!
//! From the moment the bundle is expanded until ReduceBundle, the trust-roots ConfigMap must
//! hold the rotation's old roots (`fromAnchor`, and any anchor it was retargeted away from)
//! and its new anchor, and must anchor the issuer identity uses; no pod may carry a bundle
//! that lacks a root its peers' certificates chain to. Someone re-running the bootstrap, a
//! GitOps tool re-applying an old manifest, or a person editing the ConfigMap breaks it in
//! the middle of a rotation. Every step checks it on what it just read ([`judge`], pure),
//! before it writes, restarts or advances ([`guard`], which reads and acts on the verdict):
//!
//! - when restoring is safe (the missing roots are the rotation's own, their certificates are
//!   known, and no pod already carries the broken bundle) the operator re-applies the
//!   expected bundle and says who changed it in a `BundleDrift` Warning Event;
//! - otherwise it blocks, naming what changed, who changed it, the pods at risk and what to
//!   do, and makes no write until the cause is gone.

use super::{current_new_root, names, POLL};
use crate::bundle::Bundle;
use crate::observe::MeshedPod;
use crate::pki::{anchoring_roots, short_fingerprint, verify_chain, Certificate};
use crate::read::{self, BundleWriter, TrustBundle};
use crate::snapshot::meshed_pods;
use crate::step::{Outcome, Progress, StepContext, StepError, StepReport};
use jiff::Timestamp;
use std::collections::HashMap;
use std::time::Duration;
use trust_rotation_crds::{CertificateSummary, ConfigMapRef};

/// The Warning Event reason for a trust bundle someone else changed mid-rotation.
pub const BUNDLE_DRIFT: &str = "BundleDrift";

/// Where the rotation stands with respect to the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// ReconcileBundle has not written the expanded bundle yet: the new anchor is expected to
    /// be missing (adding it is the expansion, not a repair).
    Expanding,
    /// Between the expansion and the reduction: old and new roots must both be there.
    Expanded,
    /// After ReduceBundle: the new anchor must be there; old roots are meant to be gone.
    Reduced,
}

/// A root the rotation replaces: its fingerprint, and its certificate when the operator has
/// it (the previous-anchor Secret, or the bundle itself), which restoring it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct OldRoot {
    pub fingerprint: String,
    pub cert: Option<Certificate>,
}

/// What the bundle must look like at this point of the rotation.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// `fromAnchor`, then the anchors the rotation was retargeted away from.
    pub old: Vec<OldRoot>,
    pub to: Certificate,
    /// The identity issuer's chain (leaf first), as its Secret holds it.
    pub issuer: Vec<Certificate>,
    pub stage: Stage,
    /// AwaitPropagation has finished: every pod is meant to carry the expanded bundle, so a
    /// pod without the new anchor is now at risk (the issuer may move to it at any time).
    pub propagated: bool,
}

impl Expectation {
    /// Every root the bundle must hold at this stage, in the order a restored bundle adds
    /// them.
    fn required(&self) -> Vec<(&str, Option<&Certificate>, &'static str)> {
        let mut out = Vec::new();
        if self.stage != Stage::Reduced {
            for (i, o) in self.old.iter().enumerate() {
                let role = if i == 0 {
                    "the previous anchor"
                } else {
                    "an anchor this rotation was retargeted away from"
                };
                out.push((o.fingerprint.as_str(), o.cert.as_ref(), role));
            }
        }
        if self.stage != Stage::Expanding {
            out.push((self.to.fingerprint(), Some(&self.to), "the new anchor"));
        }
        out
    }

    /// Whether `fingerprint` is one of the rotation's own roots (old or new).
    pub fn is_own(&self, fingerprint: &str) -> bool {
        fingerprint == self.to.fingerprint()
            || self.old.iter().any(|o| o.fingerprint == fingerprint)
    }
}

/// A root the bundle lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingRoot {
    pub fingerprint: String,
    pub cert: Option<Certificate>,
    pub role: &'static str,
}

impl MissingRoot {
    fn describe(&self) -> String {
        let subject = self
            .cert
            .as_ref()
            .map(|c| format!(" ({})", c.subject()))
            .unwrap_or_default();
        format!(
            "{} {}{subject}",
            self.role,
            short_fingerprint(&self.fingerprint)
        )
    }
}

/// How a bundle breaks the invariant.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub missing: Vec<MissingRoot>,
    /// Why the identity issuer does not chain to the bundle, when it does not.
    pub issuer_unanchored: Option<String>,
}

impl Violation {
    fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "lacks {}",
                self.missing
                    .iter()
                    .map(MissingRoot::describe)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
        if let Some(why) = &self.issuer_unanchored {
            parts.push(format!("does not anchor the identity issuer ({why})"));
        }
        parts.join(", and ")
    }
}

/// The invariant itself: `Ok` when `bundle` holds every root the stage requires and anchors
/// the issuer.
pub fn check(bundle: &Bundle, e: &Expectation) -> Result<(), Violation> {
    let missing: Vec<MissingRoot> = e
        .required()
        .into_iter()
        .filter(|(fp, _, _)| !bundle.contains(fp))
        .map(|(fp, cert, role)| MissingRoot {
            fingerprint: fp.to_string(),
            cert: cert.cloned(),
            role,
        })
        .collect();
    let issuer_unanchored = issuer_problem(bundle, &e.issuer);
    if missing.is_empty() && issuer_unanchored.is_none() {
        Ok(())
    } else {
        Err(Violation {
            missing,
            issuer_unanchored,
        })
    }
}

fn issuer_problem(bundle: &Bundle, issuer: &[Certificate]) -> Option<String> {
    if issuer.is_empty() {
        return None;
    }
    verify_chain(issuer, bundle.certs(), None)
        .err()
        .map(|e| format!("issuer {}: {e}", short_fingerprint(issuer[0].fingerprint())))
}

/// A pod whose proxy already carries a bundle without a root its peers need.
#[derive(Debug, Clone, PartialEq)]
pub struct PodAtRisk<'p> {
    pub pod: &'p MeshedPod,
    /// The fingerprints of the roots its bundle lacks.
    pub lacks: Vec<String>,
}

/// Pods whose proxy carries a bundle that lacks a root peers' certificates chain to: an old
/// root (certificates from the old issuer live until ReduceBundle; an anchor the rotation was
/// retargeted away from only if the issuer moved to it) or, once the expanded
/// bundle has propagated, the new anchor (the issuer may move to it). A pod's bundle is its
/// inline trust-anchors value; the control plane reads the ConfigMap at start instead, so a
/// control-plane proxy that started after `broken_since` (the bundle was broken then) is at
/// risk too.
pub fn pods_at_risk<'p>(
    pods: &'p [MeshedPod],
    e: &Expectation,
    broken_since: Option<Timestamp>,
    broken: Option<&Violation>,
) -> Vec<PodAtRisk<'p>> {
    if e.stage == Stage::Reduced {
        return Vec::new();
    }
    // The previous anchor: certificates from its issuer live until the workloads renew. An
    // anchor the rotation was retargeted away from only if the issuer moved to it (peers then
    // hold certificates chaining to it); otherwise nobody's certificate chains to it and a pod
    // that started before it was added is not at risk. Unknown certificates count as needed.
    let mut needed: Vec<&str> = e
        .old
        .iter()
        .enumerate()
        .filter(|(i, o)| {
            *i == 0
                || e.issuer.is_empty()
                || o.cert
                    .as_ref()
                    .is_none_or(|c| !anchoring_roots(&e.issuer, std::slice::from_ref(c)).is_empty())
        })
        .map(|(_, o)| o.fingerprint.as_str())
        .collect();
    if e.propagated {
        needed.push(e.to.fingerprint());
    }
    // Pods carry a handful of distinct bundles: each is parsed once per look, not per pod,
    // and found by its shared copy's address (interned when read), not by hashing its text
    // (50,000 PEMs a look).
    let mut parsed: HashMap<*const u8, Option<Bundle>> = HashMap::new();
    pods.iter()
        // A Terminating pod serves until it is gone: it is at risk like any other.
        .filter(|p| p.has_proxy)
        .filter_map(|p| {
            let carried = p.trust_anchors_env.as_ref().map(|env| {
                parsed
                    .entry(std::sync::Arc::as_ptr(env).cast::<u8>())
                    .or_insert_with(|| Bundle::parse(env).ok())
            });
            let lacks: Vec<String> = match carried {
                Some(Some(carried)) => needed
                    .iter()
                    .filter(|fp| !carried.contains(fp))
                    .map(|fp| fp.to_string())
                    .collect(),
                Some(None) => Vec::new(),
                None => match (broken, broken_since, p.proxy_started_at) {
                    (Some(v), Some(since), Some(started)) if p.control_plane && started > since => {
                        v.missing.iter().map(|m| m.fingerprint.clone()).collect()
                    }
                    _ => Vec::new(),
                },
            };
            (!lacks.is_empty()).then_some(PodAtRisk { pod: p, lacks })
        })
        .collect()
}

/// What to do about the bundle.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The invariant holds: go on.
    Holds,
    /// Write `value` (the observed roots plus the missing ones), tell people with `note`, and
    /// go on.
    Restore { value: String, note: String },
    /// Make no write; `message` says what changed, who changed it, who is at risk and what to
    /// do.
    Block(String),
}

/// The decision, from what a step just read.
pub fn judge(
    observed: &TrustBundle,
    e: &Expectation,
    pods: &[MeshedPod],
    cm: &ConfigMapRef,
) -> Verdict {
    let violation = check(&observed.bundle, e).err();
    let writer = observed.last_writer.as_ref();
    let at_risk = pods_at_risk(pods, e, writer.and_then(|w| w.time), violation.as_ref());
    let who = writer
        .map(BundleWriter::describe)
        .unwrap_or_else(|| "an unknown writer (no other field manager owns the key)".into());
    let at_risk_text = |list: &[PodAtRisk]| -> String {
        let shown: Vec<String> = list
            .iter()
            .take(10)
            .map(|r| {
                format!(
                    "{} (lacks {}; {})",
                    r.pod.pod,
                    r.lacks
                        .iter()
                        .map(|f| short_fingerprint(f))
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.pod.restart_command()
                )
            })
            .collect();
        format!(
            "{}{}",
            shown.join("; "),
            if list.len() > shown.len() {
                format!("; and {} more", list.len() - shown.len())
            } else {
                String::new()
            }
        )
    };
    let Some(v) = violation else {
        if at_risk.is_empty() {
            return Verdict::Holds;
        }
        let changed_by = writer
            .map(|w| format!("; it was changed by {}", w.describe()))
            .unwrap_or_default();
        return Verdict::Block(format!(
            "{} pod(s) carry a trust bundle that lacks a root their peers' certificates chain to (they started while \
             ConfigMap {}/{} lacked it{changed_by}), so mTLS between them and those peers fails: {}. \
             The ConfigMap holds every root again: wait a minute for the proxy injector to see it (it reads the bundle \
             through a volume the kubelet refreshes), then restart them and the rotation continues",
            at_risk.len(),
            cm.namespace,
            cm.name,
            at_risk_text(&at_risk)
        ));
    };
    let restored = Bundle::from_certs(
        observed
            .bundle
            .certs()
            .iter()
            .cloned()
            .chain(v.missing.iter().filter_map(|m| m.cert.clone())),
    );
    let unknown: Vec<&MissingRoot> = v.missing.iter().filter(|m| m.cert.is_none()).collect();
    let issuer_after = issuer_problem(&restored, &e.issuer);
    let fix = format!(
        "put every root back with `{}` (mid-rotation it prints the bundle the operator expects) and make {who} stop \
         writing it (the operator owns this ConfigMap during a rotation)",
        read::SEED_BUNDLE_COMMAND
    );
    if !at_risk.is_empty() || !unknown.is_empty() || issuer_after.is_some() {
        let mut why: Vec<String> = Vec::new();
        if !at_risk.is_empty() {
            why.push(format!(
                "{} pod(s) already carry the changed bundle and would reject their peers: {}",
                at_risk.len(),
                at_risk_text(&at_risk)
            ));
        }
        if !unknown.is_empty() {
            why.push(format!(
                "the operator has no copy of {}",
                unknown
                    .iter()
                    .map(|m| m.describe())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
        if let Some(p) = issuer_after {
            why.push(format!(
                "the identity issuer chains to none of the rotation's roots ({p})"
            ));
        }
        return Verdict::Block(format!(
            "ConfigMap {}/{} was changed by {who} and now {}; the operator will not write until it is fixed: {}. \
             To fix: {fix}{}",
            cm.namespace,
            cm.name,
            v.describe(),
            why.join("; "),
            if at_risk.is_empty() {
                String::new()
            } else {
                ", then restart the pods named above".to_string()
            }
        ));
    }
    Verdict::Restore {
        value: restored.to_pem(),
        note: format!(
            "ConfigMap {}/{} was changed by {who} and {}; the operator restored {} because the rotation needs every one \
             of them until the old root is removed. Make {} stop writing it, or it will be restored again",
            cm.namespace,
            cm.name,
            v.describe(),
            v.missing
                .iter()
                .map(|m| short_fingerprint(&m.fingerprint).to_string())
                .collect::<Vec<_>>()
                .join(", "),
            writer.map(|w| w.manager.as_str()).unwrap_or("that writer")
        ),
    }
}

/// Roots of `bundle` that belong to no rotation: neither the new anchor nor an old root.
pub fn foreign_roots(bundle: &Bundle, e: &Expectation) -> Vec<CertificateSummary> {
    bundle
        .certs()
        .iter()
        .filter(|c| !e.is_own(c.fingerprint()))
        .map(Certificate::summary)
        .collect()
}

/// What a guarded step may go on with: everything [`guard`] read.
pub struct Guarded {
    pub observed: TrustBundle,
    pub expectation: Expectation,
    pub pods: Vec<MeshedPod>,
}

impl Guarded {
    /// What the status should show from what the guard read: the foreign roots.
    pub fn progress(&self) -> Progress {
        Progress {
            foreign_roots: Some(foreign_roots(&self.observed.bundle, &self.expectation)),
            ..Default::default()
        }
    }
}

/// Either the step goes on, or it stops with this report.
pub enum Guard {
    Proceed(Box<Guarded>),
    Stop(Box<StepReport>),
}

/// How soon a step looks again after restoring the bundle.
const AFTER_RESTORE: Duration = Duration::from_secs(1);

/// The stage of the bundle, from which bundle steps have finished.
pub fn stage(ctx: &StepContext) -> Stage {
    if ctx.finished_at(names::REDUCE_BUNDLE).is_some() {
        Stage::Reduced
    } else if ctx.finished_at(names::RECONCILE_BUNDLE).is_some() {
        Stage::Expanded
    } else {
        Stage::Expanding
    }
}

/// Reads what the invariant is about: the new anchor (it must still be the rotation's), the
/// old roots' certificates (the previous-anchor Secret, else the bundle), the bundle, the
/// issuer and the meshed pods. `Err` is the message to block with.
pub async fn read_expectation(
    ctx: &StepContext,
    stage: Stage,
) -> Result<Result<(Expectation, TrustBundle), String>, StepError> {
    // Every read at once (ReconcileBundle's look is on the path from a renewed anchor to the
    // expanded bundle); their errors are judged in this order.
    let (to, bundle, previous, issuer) = tokio::join!(
        current_new_root(ctx),
        read::trust_bundle(&ctx.client, &ctx.spec.trust_roots),
        read::previous_anchor(&ctx.client, &ctx.spec.previous_anchor),
        read::issuer_chain(&ctx.client, &ctx.spec.identity_issuer),
    );
    let to = match to? {
        Ok(c) => c,
        Err(m) => return Ok(Err(m)),
    };
    let observed = match read::split_missing(bundle)? {
        Ok(b) => b,
        Err(m) => return Ok(Err(m)),
    };
    let (previous, issuer) = (previous?, issuer?);
    let known = |fp: &str| -> Option<Certificate> {
        previous
            .iter()
            .chain(observed.bundle.certs())
            .find(|c| c.fingerprint() == fp)
            .cloned()
    };
    let old = ctx
        .rotation
        .from_anchor
        .iter()
        .chain(ctx.rotation.superseded_anchors.iter())
        .filter(|fp| fp.as_str() != to.fingerprint())
        .map(|fp| OldRoot {
            fingerprint: fp.clone(),
            cert: known(fp),
        })
        .collect();
    Ok(Ok((
        Expectation {
            old,
            to,
            issuer,
            stage,
            propagated: ctx.finished_at(names::AWAIT_PROPAGATION).is_some(),
        },
        observed,
    )))
}

/// The guard every step runs first: reads, judges, and either lets the step go on with what
/// it read, restores the bundle (and looks again shortly), or blocks.
pub async fn guard(ctx: &StepContext) -> Result<Guard, StepError> {
    let (expectation, observed) = match read_expectation(ctx, stage(ctx)).await? {
        Ok(v) => v,
        Err(m) => return Ok(Guard::Stop(Box::new(Outcome::blocked(m).into()))),
    };
    let pods = meshed_pods(&ctx.client, &ctx.spec, ctx.pods.as_deref()).await?;
    let progress = Progress {
        foreign_roots: Some(foreign_roots(&observed.bundle, &expectation)),
        ..Default::default()
    };
    match judge(&observed, &expectation, &pods, &ctx.spec.trust_roots) {
        Verdict::Holds => Ok(Guard::Proceed(Box::new(Guarded {
            observed,
            expectation,
            pods,
        }))),
        Verdict::Block(m) => Ok(Guard::Stop(Box::new(Outcome::blocked(m).with(progress)))),
        Verdict::Restore { value, note } => {
            super::bundle::write_bundle(&ctx.client, &ctx.spec.trust_roots, &value).await?;
            Ok(Guard::Stop(Box::new(
                Outcome::wait(
                    format!("restored the trust bundle: {note}"),
                    AFTER_RESTORE.min(POLL),
                )
                .with(progress)
                .warn(BUNDLE_DRIFT, note),
            )))
        }
    }
}

/// Runs [`guard`] and returns early from the calling step when it says stop.
#[macro_export]
macro_rules! guarded {
    ($ctx:expr) => {
        match $crate::rotation::invariant::guard($ctx).await? {
            $crate::rotation::invariant::Guard::Proceed(g) => *g,
            $crate::rotation::invariant::Guard::Stop(report) => return Ok(*report),
        }
    };
}

#[cfg(test)]
mod tests;

//! What `linkerd trust bundle` prints: the trust bundle that is safe to apply now.
//!
//! Seeding a fresh mesh needs only the anchor. Re-running the same command later (the
//! README's bootstrap, a GitOps tool re-applying its output) must never drop a root the mesh
//! still needs, so the planner starts from the bundle the cluster holds:
//!
//! - mid-rotation, the bundle the operator expects: what is there, plus the rotation's old
//!   roots (from the previous-anchor Secret or the bundle) and the new anchor; once
//!   ReduceBundle has finished, without the old roots;
//! - otherwise, the current anchor plus the roots already there that no rotation put there
//!   (a multicluster peer's root, a root phased in by hand); roots of finished rotations go;
//! - and never, without `--force`, a bundle that drops a root the identity issuer chains to.

use crate::bundle::Bundle;
use crate::pki::{anchoring_roots, short_fingerprint, Certificate};
use crate::rotation::names;
use trust_rotation_crds::{Phase, StepState, TrustAnchorRotationStatus};

/// What the cluster holds, as the planner needs it.
pub struct SeedInput<'a> {
    /// The trust anchor (the anchor Secret's `tls.crt`).
    pub anchor: &'a Certificate,
    /// The trust-roots ConfigMap's roots, `None` when it does not exist yet.
    pub current: Option<&'a Bundle>,
    /// The previous-anchor Secret's certificate, if any.
    pub previous: Option<&'a Certificate>,
    /// The identity issuer's chain, empty when it could not be read.
    pub issuer: &'a [Certificate],
    /// The TrustAnchorRotation's status, `None` when there is none.
    pub status: Option<&'a TrustAnchorRotationStatus>,
}

/// Why a root is in, or out of, the planned bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The current trust anchor.
    Anchor,
    /// The root the rotation in progress moves from (or was retargeted away from).
    RotationOld,
    /// A root no rotation put there.
    Foreign,
    /// A root of a finished rotation (or reduced away by the one in progress).
    Retired,
}

impl Role {
    pub fn describe(self) -> &'static str {
        match self {
            Role::Anchor => "the current trust anchor",
            Role::RotationOld => "an old root the rotation in progress still needs",
            Role::Foreign => "a root no rotation put there (kept)",
            Role::Retired => "a root of a finished rotation",
        }
    }
}

/// One root and what the plan does with it.
#[derive(Debug, Clone)]
pub struct PlannedRoot {
    pub cert: Certificate,
    pub role: Role,
    /// In the ConfigMap now.
    pub present: bool,
    /// In the planned bundle.
    pub kept: bool,
}

/// The planned bundle and the reasons it may not be applied.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    pub bundle: Bundle,
    /// Every root, present or planned, in the planned bundle's order then the dropped ones.
    pub roots: Vec<PlannedRoot>,
    /// A rotation is in progress (its phase).
    pub rotation: Option<Phase>,
    /// What makes the plan unsafe: `--force` is needed to print it anyway.
    pub refusals: Vec<String>,
}

impl SeedPlan {
    /// The planned bundle equals what the ConfigMap holds (same roots, same order).
    pub fn unchanged(&self) -> bool {
        self.roots.iter().all(|r| r.present == r.kept)
            && self
                .roots
                .iter()
                .filter(|r| r.present)
                .map(|r| r.cert.fingerprint())
                .eq(self.bundle.fingerprints())
    }
}

fn in_progress(status: Option<&TrustAnchorRotationStatus>) -> Option<Phase> {
    let s = status?;
    s.rotation.as_ref()?;
    match s.phase {
        Some(Phase::Synced) | None => None,
        Some(p) => Some(p),
    }
}

/// Plans the bundle `linkerd trust bundle` prints.
pub fn plan(input: &SeedInput) -> SeedPlan {
    let empty = Bundle::default();
    let current = input.current.unwrap_or(&empty);
    let anchor_fp = input.anchor.fingerprint();
    let status = input.status;
    let phase = in_progress(status);
    // The rotation in progress: its old roots, and whether they are already reduced away.
    let (old_fps, reduced): (Vec<&str>, bool) =
        match (phase, status.and_then(|s| s.rotation.as_ref())) {
            (Some(_), Some(r)) => (
                r.from_anchor
                    .iter()
                    .chain(r.superseded_anchors.iter())
                    .map(String::as_str)
                    .filter(|fp| *fp != anchor_fp)
                    .collect(),
                status.is_some_and(|s| {
                    s.steps
                        .iter()
                        .any(|st| st.name == names::REDUCE_BUNDLE && st.state == StepState::Done)
                }),
            ),
            _ => (Vec::new(), false),
        };
    // Roots finished rotations moved away from (and the previous-anchor Secret's, which is
    // the anchor again once a rotation finished).
    let retired: Vec<&str> = status
        .map(|s| {
            s.history
                .iter()
                .flat_map(|h| h.from_anchor.iter().chain(h.superseded_anchors.iter()))
                .map(String::as_str)
                .collect::<Vec<&str>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(input.previous.map(Certificate::fingerprint))
        .filter(|fp| *fp != anchor_fp && !old_fps.contains(fp))
        .collect();
    let known = |fp: &str| -> Option<Certificate> {
        current
            .certs()
            .iter()
            .chain(input.previous)
            .find(|c| c.fingerprint() == fp)
            .cloned()
    };
    let mut roots: Vec<PlannedRoot> = Vec::new();
    let mut push = |cert: Certificate, role: Role, kept: bool| {
        if roots.iter().any(|r| r.cert == cert) {
            return;
        }
        let present = current.contains(cert.fingerprint());
        roots.push(PlannedRoot {
            cert,
            role,
            present,
            kept,
        });
    };
    // The bundle's order first (a re-apply should not reorder), then what is added.
    for c in current.certs() {
        let fp = c.fingerprint();
        let (role, kept) = if fp == anchor_fp {
            (Role::Anchor, true)
        } else if old_fps.contains(&fp) {
            (Role::RotationOld, !reduced)
        } else if retired.contains(&fp) {
            (Role::Retired, false)
        } else {
            (Role::Foreign, true)
        };
        push(c.clone(), role, kept);
    }
    if !reduced {
        for fp in &old_fps {
            if let Some(c) = known(fp) {
                push(c, Role::RotationOld, true);
            }
        }
    }
    push(input.anchor.clone(), Role::Anchor, true);
    let bundle = Bundle::from_certs(roots.iter().filter(|r| r.kept).map(|r| r.cert.clone()));

    let mut refusals = Vec::new();
    for r in roots.iter().filter(|r| r.present && !r.kept) {
        if !input.issuer.is_empty()
            && anchoring_roots(input.issuer, std::slice::from_ref(&r.cert)).len() == 1
        {
            refusals.push(format!(
                "it would remove root {} ({}) from the bundle, but the identity issuer chains to it: every \
                 workload certificate issued now would be rejected by the proxies that take the new bundle",
                short_fingerprint(r.cert.fingerprint()),
                r.cert.subject()
            ));
        }
    }
    if phase.is_some() {
        for fp in &old_fps {
            if !reduced && known(fp).is_none() {
                refusals.push(format!(
                    "the rotation in progress still needs its old root {} but neither the bundle nor the \
                     previous-anchor Secret holds it any more: restore that certificate into the previous-anchor \
                     Secret (or the bundle) first",
                    short_fingerprint(fp)
                ));
            }
        }
    }
    if !input.issuer.is_empty() && anchoring_roots(input.issuer, bundle.certs()).is_empty() {
        refusals.push(format!(
            "the identity issuer ({}) chains to none of the roots it would hold: proxies would reject every \
             workload certificate; check that the issuer was signed by the trust anchor",
            input.issuer[0].subject()
        ));
    }
    SeedPlan {
        bundle,
        roots,
        rotation: phase,
        refusals,
    }
}

#[cfg(test)]
mod tests;

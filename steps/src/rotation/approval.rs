//! Approvals (`spec.automation.approvals`): points where a rotation parks until a person
//! approves with `linkerd trust approve <step>`, which writes the annotation
//! `trust.linkerd.io/approve: <Step>@<rotation id>` on the TrustAnchorRotation. Naming the
//! rotation's id keeps an approval from approving another rotation (or the same rotation
//! after it moved on to a newer anchor, which has a new id). The step that passes the gate
//! records the approval in `status.rotation.approvals` (the record that survives restarts
//! and leadership changes) and publishes an `ApprovalConsumed` Event.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use trust_rotation_crds::{ApprovalGate, ApprovalRecord, RotationRecord, TrustAnchorRotationSpec};

/// The annotation that carries approvals: comma-separated `<Step>@<rotation id>` entries.
pub const ANNOTATION: &str = "trust.linkerd.io/approve";

/// Event reason when a rotation consumes an approval.
pub const APPROVAL_CONSUMED: &str = "ApprovalConsumed";

/// The approval annotation as read from the TrustAnchorRotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotation {
    pub value: Option<String>,
    /// The field manager that last wrote the annotation (`linkerd-trust`, `kubectl-annotate`,
    /// a GitOps controller), from `metadata.managedFields`.
    pub written_by: Option<String>,
}

impl Annotation {
    /// Reads it from the object's metadata.
    pub fn of(meta: &ObjectMeta) -> Self {
        let value = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
            .cloned();
        let key = format!("f:{ANNOTATION}");
        let written_by = value.as_ref().and_then(|_| {
            meta.managed_fields
                .iter()
                .flatten()
                .filter(|m| {
                    m.fields_v1
                        .as_ref()
                        .and_then(|f| f.0.pointer("/f:metadata/f:annotations"))
                        .and_then(|a| a.get(&key))
                        .is_some()
                })
                .max_by_key(|m| m.time.as_ref().map(|t| t.0))
                .and_then(|m| m.manager.clone())
        });
        Self { value, written_by }
    }
}

/// The `(step, rotation id)` entries of an annotation value; malformed entries are skipped.
pub fn entries(value: &str) -> Vec<(ApprovalGate, String)> {
    value
        .split(',')
        .filter_map(|e| {
            let (step, id) = e.trim().split_once('@')?;
            let id = id.trim();
            if id.is_empty() {
                return None;
            }
            Some((step.trim().parse().ok()?, id.to_string()))
        })
        .collect()
}

/// The annotation value after approving `gate` for rotation `id`: any other approval of
/// `gate` (a stale one) is replaced, approvals of other steps are kept.
pub fn approve(existing: Option<&str>, gate: ApprovalGate, id: &str) -> String {
    let mut kept: Vec<String> = existing
        .map(entries)
        .unwrap_or_default()
        .into_iter()
        .filter(|(g, _)| *g != gate)
        .map(|(g, i)| format!("{g}@{i}"))
        .collect();
    kept.push(format!("{gate}@{id}"));
    kept.join(",")
}

/// The command that approves `gate` for `rotation`.
pub fn approve_command(gate: ApprovalGate) -> String {
    format!("linkerd trust approve {gate}")
}

/// Where a gate stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Not required, or approved before (recorded in the status).
    Open,
    /// Approved by the annotation just now: record it and say so.
    Approved(ApprovalRecord),
    /// Parked: the `blockingMessage`, starting with `awaiting approval:`.
    Awaiting(String),
}

/// What `gate` means, for messages.
fn what(gate: ApprovalGate) -> &'static str {
    match gate {
        ApprovalGate::IssuerRenewal => {
            "the trust bundle has propagated; the identity issuer is to be re-issued from the new trust anchor next"
        }
        ApprovalGate::RootRemoval => {
            "workloads use the new identity issuer; the old trust anchor is to be removed from the trust bundle next"
        }
    }
}

/// Whether `gate` lets the rotation through: pure, over the spec, the rotation record (with
/// the approvals it consumed) and the annotation.
pub fn check(
    gate: ApprovalGate,
    spec: &TrustAnchorRotationSpec,
    rotation: &RotationRecord,
    annotation: &Annotation,
    now: jiff::Timestamp,
) -> Gate {
    if !gate.required(&spec.automation.approvals) {
        return Gate::Open;
    }
    if rotation
        .approvals
        .iter()
        .any(|a| a.step == gate && a.rotation_id == rotation.id)
    {
        return Gate::Open;
    }
    let found = annotation.value.as_deref().map(entries).unwrap_or_default();
    if found.iter().any(|(g, id)| *g == gate && *id == rotation.id) {
        return Gate::Approved(ApprovalRecord {
            step: gate,
            rotation_id: rotation.id.clone(),
            approved_by: annotation.written_by.clone(),
            consumed_at: Time(now),
        });
    }
    let stale: Vec<&str> = found
        .iter()
        .filter(|(g, _)| *g == gate)
        .map(|(_, id)| id.as_str())
        .collect();
    let stale = if stale.is_empty() {
        String::new()
    } else {
        format!(
            " (the approval present, {ANNOTATION}: {gate}@{}, names another rotation and does not count)",
            stale.join(",")
        )
    };
    Gate::Awaiting(format!(
        "awaiting approval: {gate} ({}; spec.automation.approvals asks a person first){stale}. Approve with `{}` \
         (or `kubectl annotate trustanchorrotation cluster --overwrite {ANNOTATION}={gate}@{}`)",
        what(gate),
        approve_command(gate),
        rotation.id,
    ))
}

/// The Event note of a consumed approval.
pub fn consumed_note(a: &ApprovalRecord) -> String {
    format!(
        "approval {} for rotation {} consumed{}",
        a.step,
        a.rotation_id,
        a.approved_by
            .as_deref()
            .map(|b| format!(" (annotation written by {b})"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use trust_rotation_crds::Approvals;

    fn rotation(id: &str) -> RotationRecord {
        RotationRecord {
            id: id.into(),
            trigger: "t".into(),
            from_anchor: None,
            to_anchor: None,
            superseded_anchors: vec![],
            started_at: Time(jiff::Timestamp::UNIX_EPOCH),
            finished_at: None,
            trace_parent: None,
            issuer_renewal: None,
            approvals: Vec::new(),
        }
    }

    fn spec(issuer: bool, root: bool) -> TrustAnchorRotationSpec {
        let mut s = TrustAnchorRotationSpec::default();
        s.automation.approvals = Approvals {
            before_issuer_renewal: issuer,
            before_root_removal: root,
        };
        s
    }

    fn annotation(v: &str) -> Annotation {
        Annotation {
            value: Some(v.into()),
            written_by: Some("linkerd-trust".into()),
        }
    }

    #[test]
    fn entries_parse_and_approve_replaces_only_the_same_step() {
        assert_eq!(
            entries(" IssuerRenewal@abc , rootremoval@def,junk,Other@x,RootRemoval@"),
            vec![
                (ApprovalGate::IssuerRenewal, "abc".to_string()),
                (ApprovalGate::RootRemoval, "def".to_string())
            ]
        );
        assert_eq!(
            approve(None, ApprovalGate::IssuerRenewal, "r1"),
            "IssuerRenewal@r1"
        );
        assert_eq!(
            approve(
                Some("IssuerRenewal@r0,RootRemoval@r1"),
                ApprovalGate::IssuerRenewal,
                "r1"
            ),
            "RootRemoval@r1,IssuerRenewal@r1"
        );
    }

    #[test]
    fn a_gate_not_asked_for_is_open() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        for g in ApprovalGate::ALL {
            assert_eq!(
                check(
                    g,
                    &spec(false, false),
                    &rotation("r"),
                    &Annotation::default(),
                    now
                ),
                Gate::Open
            );
        }
        assert_eq!(
            check(
                ApprovalGate::IssuerRenewal,
                &spec(false, true),
                &rotation("r"),
                &Annotation::default(),
                now
            ),
            Gate::Open
        );
    }

    #[test]
    fn an_asked_for_gate_parks_until_this_rotations_approval() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let s = spec(true, true);
        let r = rotation("r2");
        let Gate::Awaiting(m) = check(
            ApprovalGate::IssuerRenewal,
            &s,
            &r,
            &Annotation::default(),
            now,
        ) else {
            panic!("parks")
        };
        assert!(
            m.starts_with("awaiting approval: IssuerRenewal")
                && m.contains("`linkerd trust approve IssuerRenewal`")
                && m.contains("trust.linkerd.io/approve=IssuerRenewal@r2"),
            "{m}"
        );
        // An approval of another rotation does not count, and the message says so.
        let Gate::Awaiting(m) = check(
            ApprovalGate::IssuerRenewal,
            &s,
            &r,
            &annotation("IssuerRenewal@r1"),
            now,
        ) else {
            panic!("a stale approval does not approve")
        };
        assert!(m.contains("names another rotation"), "{m}");
        // Nor does an approval of the other step.
        assert!(matches!(
            check(
                ApprovalGate::RootRemoval,
                &s,
                &r,
                &annotation("IssuerRenewal@r2"),
                now
            ),
            Gate::Awaiting(_)
        ));
        let Gate::Approved(a) = check(
            ApprovalGate::IssuerRenewal,
            &s,
            &r,
            &annotation("RootRemoval@r1,IssuerRenewal@r2"),
            now,
        ) else {
            panic!("approved")
        };
        assert_eq!(a.step, ApprovalGate::IssuerRenewal);
        assert_eq!(a.approved_by.as_deref(), Some("linkerd-trust"));
        // Once recorded it stays open, even after the annotation is gone.
        let mut consumed = r.clone();
        consumed.approvals.push(a);
        assert_eq!(
            check(
                ApprovalGate::IssuerRenewal,
                &s,
                &consumed,
                &Annotation::default(),
                now
            ),
            Gate::Open
        );
    }

    #[test]
    fn the_writer_comes_from_managed_fields() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
        let entry = |manager: &str, fields: serde_json::Value, secs: i64| ManagedFieldsEntry {
            manager: Some(manager.into()),
            fields_v1: Some(FieldsV1(fields)),
            time: Some(Time(jiff::Timestamp::from_second(secs).unwrap())),
            ..Default::default()
        };
        let meta = ObjectMeta {
            annotations: Some([(ANNOTATION.to_string(), "IssuerRenewal@r".to_string())].into()),
            managed_fields: Some(vec![
                entry("helm", serde_json::json!({"f:spec": {}}), 30),
                entry(
                    "kubectl-annotate",
                    serde_json::json!({"f:metadata": {"f:annotations": {"f:trust.linkerd.io/approve": {}}}}),
                    20,
                ),
            ]),
            ..Default::default()
        };
        assert_eq!(
            Annotation::of(&meta),
            Annotation {
                value: Some("IssuerRenewal@r".into()),
                written_by: Some("kubectl-annotate".into()),
            }
        );
        assert_eq!(
            Annotation::of(&ObjectMeta::default()),
            Annotation::default()
        );
    }
}

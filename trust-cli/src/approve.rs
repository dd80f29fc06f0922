//! `linkerd trust approve <step>`: lets a rotation parked at an approval point
//! (`spec.automation.approvals`) go on, by writing the annotation
//! `trust.linkerd.io/approve: <Step>@<rotation id>` on the TrustAnchorRotation. The id makes
//! the approval good for the rotation in progress only; the operator records who wrote it
//! in `status.rotation.approvals` and an `ApprovalConsumed` Event.

use crate::client::{explain, explain_read};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use trust_rotation_crds::{ApprovalGate, TrustAnchorRotation};
use trust_rotation_steps::read;
use trust_rotation_steps::rotation::approval;

/// The field manager the API server records for the annotation (shown as `approvedBy`).
pub const FIELD_MANAGER: &str = "linkerd-trust";

/// Sets one annotation on the TrustAnchorRotation `rotation` as [`FIELD_MANAGER`], the way
/// `approve` and `skip` record a person's decision for the operator to read.
pub(crate) async fn annotate(
    client: &kube::Client,
    rotation: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<()> {
    let api: Api<TrustAnchorRotation> = Api::all(client.clone());
    api.patch(
        rotation,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(explain(
            &e,
            &format!("annotating TrustAnchorRotation {rotation}")
        ))
    })?;
    Ok(())
}

/// Parses the step argument (case-insensitive).
pub fn parse_gate(s: &str) -> Result<ApprovalGate, String> {
    s.parse()
}

/// Writes the approval and returns what to print.
pub async fn run(
    client: &kube::Client,
    rotation: &str,
    gate: ApprovalGate,
    rotation_id: Option<&str>,
) -> anyhow::Result<String> {
    let tar = read::rotation(client, rotation)
        .await
        .map_err(|e| anyhow::anyhow!(explain_read(&e)))?;
    let required = gate.required(&tar.spec.automation.approvals);
    let status = tar.status.clone().unwrap_or_default();
    let current = status.rotation.as_ref();
    let id = match (rotation_id, current) {
        (Some(id), _) => id.to_string(),
        (None, Some(r)) => r.id.clone(),
        (None, None) => anyhow::bail!(
            "no rotation is in progress on TrustAnchorRotation {rotation}, so there is nothing to approve \
             (an approval names the rotation it is for; pass --rotation-id to approve one ahead)"
        ),
    };
    if let Some(done) = current.and_then(|r| {
        r.approvals
            .iter()
            .find(|a| a.step == gate && a.rotation_id == id)
    }) {
        return Ok(format!(
            "{gate} was already approved for rotation {id} (consumed at {}{}); nothing changed.\n",
            done.consumed_at.0.strftime("%Y-%m-%dT%H:%M:%SZ"),
            done.approved_by
                .as_deref()
                .map(|b| format!(", written by {b}"))
                .unwrap_or_default()
        ));
    }
    let existing = approval::Annotation::of(&tar.metadata).value;
    let value = approval::approve(existing.as_deref(), gate, &id);
    annotate(client, rotation, approval::ANNOTATION, &value).await?;
    let mut out = format!(
        "Approved {gate} for rotation {id} ({} {value} on TrustAnchorRotation {rotation}).\n",
        approval::ANNOTATION
    );
    if !required {
        out.push_str(&format!(
            "Note: spec.automation.approvals does not ask for {gate} approval, so the rotation does not wait for it.\n"
        ));
    } else if current.is_some_and(|r| r.id != id) {
        out.push_str(&format!(
            "Note: the rotation in progress is {}, not {id}: this approval does not let it go on.\n",
            current.map(|r| r.id.as_str()).unwrap_or_default()
        ));
    } else {
        out.push_str(
            "The operator goes on at its next look and records the approval in .status.rotation.approvals; \
             follow it with `linkerd trust status --watch`.\n",
        );
    }
    Ok(out)
}

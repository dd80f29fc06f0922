//! `linkerd trust skip KIND/NAME -n NS`: tells the operator's automatic workload restarts
//! (`spec.automation.workloadRestarts: Automatic`) to leave a workload alone for the rotation
//! in progress, typically one whose rollout does not progress and stopped the automation. It
//! writes the annotation `trust.linkerd.io/skip: <ns>/<kind>/<name>@<rotation id>` on the
//! TrustAnchorRotation. The operator then goes on with the other workloads; the skipped
//! workload's pods still hold the rotation until a person replaces them (the operator never
//! deletes a pod, nor removes a root a live pod needs).

use crate::approve::annotate;
use crate::client::explain_read;
use trust_rotation_steps::read;
use trust_rotation_steps::rotation::restarts::{self, WorkloadRef};

/// Parses `KIND/NAME` (`deploy/web`, `statefulset/db`, `ds/agent`...).
pub fn parse_workload(s: &str) -> Result<(String, String), String> {
    let (kind, name) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected KIND/NAME, e.g. deploy/web"))?;
    let kind = restarts::normalize_kind(kind).ok_or_else(|| {
        format!("{kind:?}: the operator restarts only deployments, statefulsets and daemonsets")
    })?;
    if name.is_empty() || name.contains('/') {
        return Err(format!("{s:?}: expected KIND/NAME, e.g. deploy/web"));
    }
    Ok((kind.to_string(), name.to_string()))
}

/// Writes the skip and returns what to print.
pub async fn run(
    client: &kube::Client,
    rotation: &str,
    workload: &(String, String),
    namespace: &str,
) -> anyhow::Result<String> {
    let tar = read::rotation(client, rotation)
        .await
        .map_err(|e| anyhow::anyhow!(explain_read(&e)))?;
    let status = tar.status.clone().unwrap_or_default();
    let Some(current) = status.rotation.as_ref() else {
        anyhow::bail!(
            "no rotation is in progress on TrustAnchorRotation {rotation}, so there is nothing to skip \
             (a skip names the rotation it is for)"
        );
    };
    let w = WorkloadRef {
        namespace: namespace.to_string(),
        kind: workload.0.clone(),
        name: workload.1.clone(),
    };
    let existing = tar
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(restarts::SKIP_ANNOTATION))
        .cloned();
    let value = restarts::add_skip(existing.as_deref(), &w, &current.id);
    annotate(client, rotation, restarts::SKIP_ANNOTATION, &value).await?;
    let mut out = format!(
        "Skipped {w} for rotation {} ({} on TrustAnchorRotation {rotation}).\n",
        current.id,
        restarts::SKIP_ANNOTATION
    );
    if tar.spec.automation.workload_restarts != trust_rotation_crds::RenewalMode::Automatic {
        out.push_str(
            "Note: spec.automation.workloadRestarts is not Automatic: the operator restarts no workload anyway.\n",
        );
    } else {
        out.push_str(&format!(
            "The operator goes on with the other workloads at its next look. The pods of {w} still hold the \
             rotation until you replace them (fix the rollout, or restart or delete them yourself); \
             follow it with `linkerd trust status --watch`.\n"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_like_kubectl_names_them() {
        assert_eq!(
            parse_workload("deploy/web"),
            Ok(("deployment".into(), "web".into()))
        );
        assert_eq!(
            parse_workload("statefulsets.apps/db"),
            Ok(("statefulset".into(), "db".into()))
        );
        assert_eq!(
            parse_workload("ds/agent"),
            Ok(("daemonset".into(), "agent".into()))
        );
        assert!(parse_workload("job/backfill")
            .unwrap_err()
            .contains("only deployments"));
        assert!(parse_workload("web").is_err());
        assert!(parse_workload("deploy/").is_err());
    }
}

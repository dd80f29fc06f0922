//! cert-manager resources, read and written as dynamic objects (no cert-manager crate).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn certificate() -> ApiResource {
    ar("cert-manager.io", "v1", "Certificate", "certificates")
}
pub fn issuer() -> ApiResource {
    ar("cert-manager.io", "v1", "Issuer", "issuers")
}
pub fn cluster_issuer() -> ApiResource {
    ar("cert-manager.io", "v1", "ClusterIssuer", "clusterissuers")
}
/// trust-manager's Bundle (cluster-scoped).
pub fn trust_manager_bundle() -> ApiResource {
    ar("trust.cert-manager.io", "v1alpha1", "Bundle", "bundles")
}

/// A status condition of a cert-manager object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Condition {
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// The condition of type `type_`, if any.
pub fn condition(obj: &DynamicObject, type_: &str) -> Option<Condition> {
    obj.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        .map(|c| {
            let s = |k: &str| {
                c.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Condition {
                status: s("status"),
                reason: s("reason"),
                message: s("message"),
            }
        })
}

/// `Ok` when `Ready=True`, else the reason and message cert-manager gives.
pub fn ready(obj: &DynamicObject, what: &str) -> Result<(), String> {
    match condition(obj, "Ready") {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!(
            "{what} is not ready: Ready={} ({}{}{})",
            c.status,
            c.reason,
            if c.message.is_empty() { "" } else { ": " },
            c.message
        )),
        None => Err(format!(
            "{what} has no Ready condition yet: cert-manager has not processed it"
        )),
    }
}

/// `reason` and `message` of the `Issuing` condition `cmctl renew` sets.
pub const RENEW_REASON: &str = "ManuallyTriggered";
pub const RENEW_MESSAGE: &str = "Certificate re-issuance manually triggered";

/// What [`renew`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewed {
    Triggered,
    /// cert-manager is already re-issuing it (`Issuing=True`): nothing changed.
    AlreadyIssuing,
}

/// Why [`renew`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("the Certificate does not exist")]
    NotFound,
    /// A request failed; `doing` says which ("reading", "updating the status of").
    #[error("{doing} the Certificate: {err}")]
    Kube {
        doing: &'static str,
        err: kube::Error,
    },
    #[error("the Certificate {0}")]
    Malformed(&'static str),
    #[error("the Certificate kept changing while its status was updated (5 conflicts)")]
    Conflicts,
}

impl RenewError {
    /// The step error for a failed [`renew`] of `what` (e.g. `Certificate linkerd/linkerd-identity-issuer`).
    pub fn into_step_error(self, what: &str) -> crate::step::StepError {
        use crate::step::{ErrorCategory, StepError};
        match self {
            RenewError::NotFound => StepError::permanent(
                ErrorCategory::MissingResource,
                format!("{what} does not exist: it cannot be re-issued"),
            ),
            RenewError::Kube { doing, err } => StepError::from_kube(format!("{doing} {what}"), err),
            RenewError::Malformed(m) => {
                StepError::permanent(ErrorCategory::KubeDecode, format!("{what} {m}"))
            }
            RenewError::Conflicts => StepError::transient(
                ErrorCategory::KubeConflict,
                format!("{what} kept changing while its status was updated"),
            ),
        }
    }
}

/// What `cmctl renew` does, the one implementation shared by `linkerd trust renew` and the
/// operator (`spec.automation.issuerRenewal: Automatic`, `spec.automation.schedule.renewAnchorBefore`): sets the Certificate's `Issuing`
/// condition to `True` with reason `ManuallyTriggered` through the status subresource,
/// retrying on write conflicts. A Certificate already issuing is left alone.
pub async fn renew(client: &kube::Client, ns: &str, name: &str) -> Result<Renewed, RenewError> {
    use kube::api::{Api, PostParams};
    use serde_json::json;
    let api: kube::Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &certificate());
    for _ in 0..5 {
        let mut cert = api.get(name).await.map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 404 => RenewError::NotFound,
            _ => RenewError::Kube {
                doing: "reading",
                err: e,
            },
        })?;
        if condition(&cert, "Issuing").is_some_and(|c| c.status == "True") {
            return Ok(Renewed::AlreadyIssuing);
        }
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let mut issuing = json!({
            "type": "Issuing",
            "status": "True",
            "reason": RENEW_REASON,
            "message": RENEW_MESSAGE,
            "lastTransitionTime": now,
        });
        if let Some(g) = cert.metadata.generation {
            issuing["observedGeneration"] = json!(g);
        }
        let status = cert
            .data
            .as_object_mut()
            .map(|o| o.entry("status").or_insert_with(|| json!({})))
            .ok_or(RenewError::Malformed("is not a JSON object"))?;
        if !status.is_object() {
            *status = json!({});
        }
        let conditions = status
            .as_object_mut()
            .map(|o| o.entry("conditions").or_insert_with(|| json!([])))
            .ok_or(RenewError::Malformed("has a malformed status"))?;
        match conditions.as_array_mut() {
            Some(list) => {
                list.retain(|c| c.get("type").and_then(Value::as_str) != Some("Issuing"));
                list.push(issuing);
            }
            None => *conditions = json!([issuing]),
        }
        match api
            .replace_status(name, &PostParams::default(), &cert)
            .await
        {
            Ok(_) => return Ok(Renewed::Triggered),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(err) => {
                return Err(RenewError::Kube {
                    doing: "updating the status of",
                    err,
                })
            }
        }
    }
    Err(RenewError::Conflicts)
}

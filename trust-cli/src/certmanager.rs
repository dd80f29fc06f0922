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

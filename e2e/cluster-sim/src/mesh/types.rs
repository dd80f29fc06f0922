//! The resource types the mesh uses. The API server registers the built-in kinds itself;
//! this fills in whatever is missing (so the mesh also runs on a bare [`Store`] in tests),
//! including cert-manager's kinds as its CRDs define them.

use crate::store::{ResourceKey, ResourceType, Store};

#[allow(clippy::too_many_arguments)]
fn rt(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    categories: &[&str],
) -> ResourceType {
    ResourceType {
        key: ResourceKey::new(group, plural),
        version: version.to_string(),
        kind: kind.to_string(),
        list_kind: format!("{kind}List"),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        status_subresource: status,
        categories: categories.iter().map(|s| s.to_string()).collect(),
        printer_columns: Vec::new(),
        verbs: [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    }
}

/// Every type the mesh reads or writes.
pub fn mesh_types() -> Vec<ResourceType> {
    vec![
        rt(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            &[],
        ),
        rt("", "v1", "pods", "Pod", true, &["po"], true, &["all"]),
        rt(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            &[],
        ),
        rt("", "v1", "secrets", "Secret", true, &[], false, &[]),
        rt(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            &[],
        ),
        rt("", "v1", "events", "Event", true, &["ev"], false, &[]),
        rt(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            &["all"],
        ),
        rt(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            &["all"],
        ),
        rt("", "v1", "nodes", "Node", false, &["no"], true, &[]),
        rt(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            true,
            &["all"],
        ),
        rt(
            "apps",
            "v1",
            "daemonsets",
            "DaemonSet",
            true,
            &["ds"],
            true,
            &["all"],
        ),
        rt(
            "apps",
            "v1",
            "controllerrevisions",
            "ControllerRevision",
            true,
            &[],
            false,
            &[],
        ),
        rt("batch", "v1", "jobs", "Job", true, &[], true, &["all"]),
        rt(
            "batch",
            "v1",
            "cronjobs",
            "CronJob",
            true,
            &["cj"],
            true,
            &["all"],
        ),
        rt(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            true,
            &[],
        ),
        rt(
            "cert-manager.io",
            "v1",
            "certificates",
            "Certificate",
            true,
            &["cert", "certs"],
            true,
            &["cert-manager"],
        ),
        rt(
            "cert-manager.io",
            "v1",
            "certificaterequests",
            "CertificateRequest",
            true,
            &["cr", "crs"],
            true,
            &["cert-manager"],
        ),
        rt(
            "cert-manager.io",
            "v1",
            "issuers",
            "Issuer",
            true,
            &[],
            true,
            &["cert-manager"],
        ),
        rt(
            "cert-manager.io",
            "v1",
            "clusterissuers",
            "ClusterIssuer",
            false,
            &[],
            true,
            &["cert-manager"],
        ),
    ]
}

/// Registers each of [`mesh_types`] that the store does not serve yet.
pub fn register_missing(store: &Store) {
    for t in mesh_types() {
        if store.resource_type(&t.key).is_none() {
            store.register_type(t);
        }
    }
}

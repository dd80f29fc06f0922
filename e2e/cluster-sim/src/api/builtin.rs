//! The built-in resource types a fresh simulated cluster serves, the namespaces it starts
//! with, and cert-manager's CustomResourceDefinitions (embedded from `crds/`, applied as CRDs).

use crate::store::{crd_key, ResourceKey, ResourceType, Store, StoreError};
use serde_json::{json, Value};

/// cert-manager v1.21.1's CRDs, unchanged (`e2e/cluster-sim/crds/`).
pub const CERT_MANAGER_CRDS: &[(&str, &str)] = &[
    (
        "cert-manager.io_certificaterequests.yaml",
        include_str!("../../crds/cert-manager.io_certificaterequests.yaml"),
    ),
    (
        "cert-manager.io_certificates.yaml",
        include_str!("../../crds/cert-manager.io_certificates.yaml"),
    ),
    (
        "cert-manager.io_clusterissuers.yaml",
        include_str!("../../crds/cert-manager.io_clusterissuers.yaml"),
    ),
    (
        "cert-manager.io_issuers.yaml",
        include_str!("../../crds/cert-manager.io_issuers.yaml"),
    ),
];

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
    categories: &'static [&'static str],
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        status: true,
        categories: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        status: true,
        categories: &["all"],
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        status: false,
        categories: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        status: false,
        categories: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        status: false,
        categories: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        status: true,
        categories: &["all"],
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        status: false,
        categories: &[],
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        status: false,
        categories: &[],
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        status: true,
        categories: &["all"],
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        status: true,
        categories: &["all"],
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        status: true,
        categories: &[],
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
        short_names: &["sts"],
        status: true,
        categories: &["all"],
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        short_names: &["ds"],
        status: true,
        categories: &["all"],
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "controllerrevisions",
        kind: "ControllerRevision",
        namespaced: true,
        short_names: &[],
        status: false,
        categories: &[],
    },
    Builtin {
        group: "batch",
        version: "v1",
        plural: "jobs",
        kind: "Job",
        namespaced: true,
        short_names: &[],
        status: true,
        categories: &["all"],
    },
    Builtin {
        group: "batch",
        version: "v1",
        plural: "cronjobs",
        kind: "CronJob",
        namespaced: true,
        short_names: &["cj"],
        status: true,
        categories: &["all"],
    },
    Builtin {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        status: true,
        categories: &[],
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        status: false,
        categories: &[],
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        status: true,
        categories: &["api-extensions"],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        status: false,
        categories: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        status: false,
        categories: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        status: false,
        categories: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        status: false,
        categories: &[],
    },
];

/// The namespaces a new cluster has.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Whether a type is one of the compiled-in kinds (strategic merge patch applies to these).
pub fn is_builtin(key: &ResourceKey) -> bool {
    BUILTINS
        .iter()
        .any(|b| b.group == key.group && b.plural == key.plural)
}

/// Registers the built-in kinds, creates the initial namespaces and applies cert-manager's CRDs.
pub fn install(store: &Store) -> Result<(), StoreError> {
    for b in BUILTINS {
        store.register_type(ResourceType {
            key: ResourceKey::new(b.group, b.plural),
            version: b.version.to_string(),
            kind: b.kind.to_string(),
            list_kind: format!("{}List", b.kind),
            singular: b.kind.to_lowercase(),
            namespaced: b.namespaced,
            short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
            status_subresource: b.status,
            categories: b.categories.iter().map(|s| s.to_string()).collect(),
            printer_columns: Vec::new(),
            verbs: ALL_VERBS.iter().map(|s| s.to_string()).collect(),
        });
    }
    let ns_key = ResourceKey::new("", "namespaces");
    for ns in INITIAL_NAMESPACES {
        if store.get(&ns_key, None, ns).is_none() {
            store.create(&ns_key, new_namespace(ns))?;
        }
    }
    for (file, yaml) in CERT_MANAGER_CRDS {
        let crd: Value = serde_yaml::from_str(yaml)
            .map_err(|e| StoreError::Invalid(format!("embedded CRD {file} does not parse: {e}")))?;
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if store.get(&crd_key(), None, &name).is_none() {
            store.create(&crd_key(), crd)?;
        }
    }
    Ok(())
}

/// A Namespace object as the API server stores it (phase Active, the `kubernetes` finalizer
/// is not modelled: namespace deletion is immediate, see the README).
pub fn new_namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {},
        "status": {"phase": "Active"},
    })
}

//! `linkerd trust bundle`: renders the trust-roots ConfigMap from cert-manager's anchor Secret,
//! so that `linkerd trust bundle | kubectl apply -f -` seeds it before the operator runs, and
//! re-running it later (or a GitOps tool re-applying its output) never drops a root the mesh
//! still needs: the plan is [`trust_rotation_steps::seed`]'s.

use crate::client::explain_read;
use crate::names::PkiNames;
use anyhow::Context as _;
use serde::Serialize;
use std::collections::BTreeMap;
use trust_rotation_crds::{SecretRef, TrustAnchorRotationStatus};
use trust_rotation_steps::bundle::Bundle;
use trust_rotation_steps::pki::{short_fingerprint, Certificate};
use trust_rotation_steps::read;
use trust_rotation_steps::seed::{self, SeedInput, SeedPlan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestFormat {
    Yaml,
    Json,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMapManifest<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: Metadata<'a>,
    data: BTreeMap<&'a str, String>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    namespace: &'a str,
}

/// The ConfigMap manifest holding `bundle` (normalised PEM, one newline at the end).
pub fn render_manifest(
    bundle: &Bundle,
    name: &str,
    namespace: &str,
    key: &str,
    format: ManifestFormat,
) -> anyhow::Result<String> {
    let manifest = ConfigMapManifest {
        api_version: "v1",
        kind: "ConfigMap",
        metadata: Metadata { name, namespace },
        data: BTreeMap::from([(key, bundle.to_pem())]),
    };
    Ok(match format {
        ManifestFormat::Yaml => serde_yaml::to_string(&manifest).context("rendering YAML")?,
        ManifestFormat::Json => {
            format!(
                "{}\n",
                serde_json::to_string_pretty(&manifest).context("rendering JSON")?
            )
        }
    })
}

/// What the cluster holds, read for [`seed::plan`], and what could not be read.
pub struct Inputs {
    pub anchor: Certificate,
    pub current: Option<Bundle>,
    pub previous: Option<Certificate>,
    pub issuer: Vec<Certificate>,
    pub status: Option<TrustAnchorRotationStatus>,
    /// Reads that failed without stopping the plan (printed on stderr).
    pub warnings: Vec<String>,
}

impl Inputs {
    pub fn plan(&self) -> SeedPlan {
        seed::plan(&SeedInput {
            anchor: &self.anchor,
            current: self.current.as_ref(),
            previous: self.previous.as_ref(),
            issuer: &self.issuer,
            status: self.status.as_ref(),
        })
    }
}

/// Reads what the planner needs. The trust anchor and the TrustAnchorRotation (when its CRD is
/// installed) must be readable; a missing ConfigMap, previous anchor or issuer is a state the
/// planner knows (a fresh mesh), and an unusable one is reported and planned around.
pub async fn read_inputs(
    client: &kube::Client,
    names: &PkiNames,
    linkerd_ns: &str,
    rotation: &str,
) -> anyhow::Result<Inputs> {
    let mut warnings = Vec::new();
    let anchor = read::anchor(client, &names.anchor_ref())
        .await
        .map_err(|e| anyhow::anyhow!(explain_read(&e.or_pass("--trust-anchor-secret"))))?;
    let tar = match read::split_missing(read::rotation(client, rotation).await) {
        Ok(Ok(tar)) => Some(tar),
        Ok(Err(_)) => None,
        Err(e) => anyhow::bail!(
            "{}; the bundle cannot be planned without knowing whether a rotation is in progress \
             (pass --rotation if it has another name)",
            explain_read(&e)
        ),
    };
    let previous_ref = tar
        .as_ref()
        .map(|t| t.spec.previous_anchor.clone())
        .unwrap_or_else(|| SecretRef {
            namespace: names.cert_manager_namespace.clone(),
            ..SecretRef::default_previous_anchor()
        });
    let previous = match read::previous_anchor(client, &previous_ref).await {
        Ok(p) => p,
        Err(e) if e.kube_error().is_some() => anyhow::bail!(explain_read(&e)),
        Err(e) => {
            warnings.push(explain_read(&e));
            None
        }
    };
    let current = match read::trust_bundle(client, &names.roots_ref(linkerd_ns)).await {
        Ok(b) => Some(b.bundle),
        Err(e) if e.is_missing() => None,
        Err(e) if e.kube_error().is_some() => anyhow::bail!(explain_read(&e)),
        Err(e) => {
            warnings.push(format!("{}; it is replaced", explain_read(&e)));
            None
        }
    };
    let issuer = match read::issuer_chain(client, &names.issuer_ref(linkerd_ns)).await {
        Ok(chain) => chain,
        Err(e) if e.is_missing() => Vec::new(),
        Err(e) if e.kube_error().is_some() => anyhow::bail!(explain_read(&e)),
        Err(e) => {
            warnings.push(format!(
                "{}; the plan cannot check that the identity issuer stays anchored",
                explain_read(&e)
            ));
            Vec::new()
        }
    };
    Ok(Inputs {
        anchor,
        current,
        previous,
        issuer,
        status: tar.and_then(|t| t.status),
        warnings,
    })
}

/// The plan, root by root, for `--dry-run` (and for stderr when a rotation shapes it).
pub fn render_plan(plan: &SeedPlan, configmap: &str) -> String {
    let mut s = String::new();
    match plan.rotation {
        Some(phase) => s.push_str(&format!(
            "Trust bundle {configmap} (a rotation is in progress: {phase})\n"
        )),
        None => s.push_str(&format!("Trust bundle {configmap}\n")),
    }
    for r in &plan.roots {
        let mark = match (r.present, r.kept) {
            (true, true) => '=',
            (false, true) => '+',
            (true, false) => '-',
            (false, false) => continue,
        };
        s.push_str(&format!(
            "  {mark} {}  {}  {}\n",
            short_fingerprint(r.cert.fingerprint()),
            r.cert.subject(),
            r.role.describe()
        ));
    }
    if plan.unchanged() {
        s.push_str("No change: the ConfigMap already holds this bundle.\n");
    }
    for r in &plan.refusals {
        s.push_str(&format!("Refused: {r}\n"));
    }
    s
}

/// The error for a plan that is refused: every reason, and the way past them.
pub fn refusal(plan: &SeedPlan) -> anyhow::Error {
    anyhow::anyhow!(
        "refusing to print a trust bundle that would break mTLS: {}. Run with --dry-run to see the \
         plan; pass --force to print it anyway",
        plan.refusals.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bundle_renders_valid_manifests() {
        let b = Bundle::default();
        let y = render_manifest(
            &b,
            "roots",
            "linkerd",
            "ca-bundle.crt",
            ManifestFormat::Yaml,
        )
        .unwrap();
        assert!(y.starts_with(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: roots\n  namespace: linkerd\n"
        ));
        let j = render_manifest(
            &b,
            "roots",
            "linkerd",
            "ca-bundle.crt",
            ManifestFormat::Json,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["data"]["ca-bundle.crt"], "");
    }
}

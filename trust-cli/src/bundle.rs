//! `linkerd trust bundle`: renders the trust-roots ConfigMap from cert-manager's anchor Secret,
//! so that `linkerd trust bundle | kubectl apply -f -` seeds it before the operator runs.

use crate::client::{explain, is_not_found};
use crate::names::PkiNames;
use anyhow::{bail, Context as _};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Serialize;
use std::collections::BTreeMap;
use trust_rotation_steps::bundle::Bundle;

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

/// Reads the trust anchor from its Secret's `tls.crt` as a normalised bundle.
pub async fn read_anchor_bundle(client: &kube::Client, names: &PkiNames) -> anyhow::Result<Bundle> {
    let ns = &names.cert_manager_namespace;
    let secret_name = names.anchor_secret();
    let what = format!("Secret {ns}/{secret_name}");
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(secret_name)
        .await
        .map_err(|e| {
            if is_not_found(&e) {
                anyhow::anyhow!(
                    "{what} not found: cert-manager has not issued the trust anchor yet; check \
                     `kubectl -n {ns} describe certificate {}` (or pass --trust-anchor-secret)",
                    names.trust_anchor
                )
            } else {
                anyhow::anyhow!(explain(&e, &format!("reading {what}")))
            }
        })?;
    let Some(crt) = secret.data.as_ref().and_then(|d| d.get("tls.crt")) else {
        bail!("{what} has no tls.crt: it does not hold a certificate issued by cert-manager");
    };
    let text = std::str::from_utf8(&crt.0)
        .map_err(|_| anyhow::anyhow!("{what} tls.crt is not PEM text (not UTF-8)"))?;
    if text.trim().is_empty() {
        bail!("{what} tls.crt is empty: cert-manager has not issued the trust anchor yet");
    }
    Bundle::parse(text).map_err(|e| anyhow::anyhow!("{what} tls.crt: {e}"))
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

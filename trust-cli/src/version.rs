//! `linkerd trust version`: the client's version and the operator's, read from its Deployment.

use crate::client::{explain, is_not_found};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};

pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The operator's version from its Deployment: the `app.kubernetes.io/version` label, else the
/// image tag.
pub fn deployment_version(d: &Deployment) -> Option<String> {
    if let Some(v) = d
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/version"))
        .filter(|v| !v.is_empty())
    {
        return Some(v.clone());
    }
    let image = d
        .spec
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()?;
    image_tag(&image)
}

/// `repo:tag` → `tag`; `repo@sha256:..` → the digest.
pub fn image_tag(image: &str) -> Option<String> {
    if let Some((_, digest)) = image.split_once('@') {
        return Some(digest.to_string());
    }
    let last = image.rsplit('/').next()?;
    last.split_once(':').map(|(_, t)| t.to_string())
}

/// "Server" line text: the version, or why it is unavailable.
pub async fn operator_version(client: &kube::Client, ns: &str, name: &str) -> String {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    match api.get(name).await {
        Ok(d) => deployment_version(&d)
            .unwrap_or_else(|| "unknown (no version label or image tag)".into()),
        Err(e) if is_not_found(&e) => {
            // Installed under another release name? Look it up by the chart's label.
            let lp = ListParams::default().labels("app.kubernetes.io/name=trust-rotation-operator");
            match Api::<Deployment>::all(client.clone()).list(&lp).await {
                Ok(list) if !list.items.is_empty() => list
                    .items
                    .iter()
                    .filter_map(deployment_version)
                    .next()
                    .unwrap_or_else(|| "unknown".into()),
                _ => format!("unavailable (Deployment {ns}/{name} not found)"),
            }
        }
        Err(e) => format!(
            "unavailable ({})",
            explain(&e, "reading the operator Deployment")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(image_tag("ghcr.io/x/op:0.1.0").as_deref(), Some("0.1.0"));
        assert_eq!(image_tag("localhost:5000/op").as_deref(), None);
        assert_eq!(image_tag("localhost:5000/op:v2").as_deref(), Some("v2"));
        assert_eq!(image_tag("op@sha256:abc").as_deref(), Some("sha256:abc"));
    }
}

//! `linkerd trust renew anchor|issuer`: what `cmctl renew` does — set the Certificate's
//! `Issuing` condition to `True` with reason `ManuallyTriggered` through the status
//! subresource — so that the walkthrough needs no other tool.

use crate::certmanager;
use crate::client::{explain, is_not_found};
use crate::names::PkiNames;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The trust anchor (starts a rotation)
    Anchor,
    /// The identity issuer (step 3 of a rotation)
    Issuer,
}

pub const REASON: &str = "ManuallyTriggered";
pub const MESSAGE: &str = "Certificate re-issuance manually triggered";

/// What happened.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewed {
    Triggered,
    AlreadyIssuing,
}

/// Sets `Issuing=True` on the Certificate `ns/name`, retrying on write conflicts.
pub async fn trigger(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<Renewed> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &certmanager::certificate());
    let what = format!("Certificate {ns}/{name}");
    for _ in 0..5 {
        let mut cert = api.get(name).await.map_err(|e| {
            if is_not_found(&e) {
                anyhow::anyhow!("{what} not found (is cert-manager's PKI installed? names can be overridden by flags)")
            } else {
                anyhow::anyhow!(explain(&e, &format!("reading {what}")))
            }
        })?;
        if certmanager::condition(&cert, "Issuing").is_some_and(|c| c.status == "True") {
            return Ok(Renewed::AlreadyIssuing);
        }
        let generation = cert.metadata.generation;
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let mut condition = json!({
            "type": "Issuing",
            "status": "True",
            "reason": REASON,
            "message": MESSAGE,
            "lastTransitionTime": now,
        });
        if let Some(g) = generation {
            condition["observedGeneration"] = json!(g);
        }
        let status = cert
            .data
            .as_object_mut()
            .map(|o| o.entry("status").or_insert_with(|| json!({})))
            .ok_or_else(|| anyhow::anyhow!("{what} is not a JSON object"))?;
        if !status.is_object() {
            *status = json!({});
        }
        let conditions = status
            .as_object_mut()
            .map(|o| o.entry("conditions").or_insert_with(|| json!([])))
            .ok_or_else(|| anyhow::anyhow!("{what} has a malformed status"))?;
        match conditions.as_array_mut() {
            Some(list) => {
                list.retain(|c| c.get("type").and_then(Value::as_str) != Some("Issuing"));
                list.push(condition);
            }
            None => *conditions = json!([condition]),
        }
        match api
            .replace_status(name, &PostParams::default(), &cert)
            .await
        {
            Ok(_) => return Ok(Renewed::Triggered),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => anyhow::bail!(explain(&e, &format!("updating the status of {what}"))),
        }
    }
    anyhow::bail!("{what} kept changing while we tried to update it (5 conflicts); try again")
}

/// Runs the command and returns what to print.
pub async fn run(
    client: &kube::Client,
    linkerd_ns: &str,
    names: &PkiNames,
    target: Target,
) -> anyhow::Result<String> {
    let (ns, name) = match target {
        Target::Anchor => (
            names.cert_manager_namespace.as_str(),
            names.trust_anchor.as_str(),
        ),
        Target::Issuer => (linkerd_ns, names.identity_issuer.as_str()),
    };
    let outcome = trigger(client, ns, name).await?;
    let head = match outcome {
        Renewed::AlreadyIssuing => {
            format!("Certificate {ns}/{name} is already being re-issued; nothing changed.\n")
        }
        Renewed::Triggered => format!("Manually triggered issuance of Certificate {ns}/{name}\n"),
    };
    let next = match target {
        Target::Anchor => format!(
            "\nWhat happens next: cert-manager issues a new trust anchor into Secret {ns}/{}. The operator then \
             copies the old anchor into {}, expands {linkerd_ns}/{} to hold both roots and restarts the control \
             plane (phases RefreshingControlPlane, then PropagatingTrustRoots). Then restart your meshed \
             workloads (e.g. `kubectl -n emojivoto rollout restart deploy`) and follow progress with \
             `linkerd trust status --watch` or `linkerd trust inspect`.\n",
            names.anchor_secret(),
            trust_rotation_crds::DEFAULT_PREVIOUS_ANCHOR,
            names.trust_roots,
        ),
        Target::Issuer => "\nWhat happens next: cert-manager issues a new identity issuer signed by the new trust anchor. \
             The operator moves to RenewingWorkloadCerts and publishes an accelerated refresh interval; proxies \
             pick up certificates from the new issuer as they renew (restart workloads to do it now). Follow \
             progress with `linkerd trust status --watch` or `linkerd trust inspect`.\n"
            .to_string(),
    };
    Ok(format!("{head}{next}"))
}

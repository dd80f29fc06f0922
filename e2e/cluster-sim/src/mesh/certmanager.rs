//! cert-manager: `selfSigned` and `ca` Issuers/ClusterIssuers, and Certificates issued into
//! their Secrets (`tls.crt`, `tls.key`, `ca.crt`), with cert-manager's status (`revision`,
//! `notBefore`, `notAfter`, `renewalTime`, conditions `Ready`/`Issuing`), re-issuance when
//! `Issuing=True` is set (what `cmctl renew` does) and at `renewalTime`.

use super::pki::{self, Template};
use super::{
    b64, certificates, cluster_issuers, condition, condition_true, issuers, mutate_if_exists,
    name_of, ns_of, remove_condition, secret_value, secrets, set_condition, ts_rfc3339, Shared,
    CERT_MANAGER_NS,
};
use crate::store::{Store, StoreError};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_DURATION: Duration = Duration::from_secs(90 * 24 * 3600);

pub(crate) async fn run(shared: Arc<Shared>) {
    let store = shared.store.clone();
    let Ok((_, mut rx)) = store.watch(None) else {
        return;
    };
    let relevant = |ev: &crate::store::WatchEvent| {
        let k = &ev.key;
        k.group == "cert-manager.io" || (k.group.is_empty() && k.plural == "secrets")
    };
    loop {
        let next = reconcile_all(&store);
        let deadline =
            next.map(|secs| tokio::time::Instant::now() + Duration::from_secs_f64(secs.max(0.05)));
        if !super::wait_for_change(&mut rx, &shared.cancel, deadline, &relevant).await {
            return;
        }
    }
}

/// Reconciles every issuer and Certificate; returns seconds until the next renewal.
pub fn reconcile_all(store: &Store) -> Option<f64> {
    for (k, ns) in [(issuers(), None::<&str>), (cluster_issuers(), None)] {
        let (items, _) = store.list(&k, ns);
        for it in items {
            reconcile_issuer(store, &k, &it);
        }
    }
    let (certs, _) = store.list(&certificates(), None);
    let mut next: Option<f64> = None;
    for c in certs {
        match reconcile_certificate(store, &c) {
            Ok(Some(secs)) => next = Some(next.map_or(secs, |n| n.min(secs))),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(certificate = name_of(&c), error = %e, "cert-manager reconcile failed")
            }
        }
    }
    next
}

enum Signer {
    SelfSigned,
    Ca {
        chain: Vec<rustls_pki_types::CertificateDer<'static>>,
        ca_crt: String,
        key_pem: String,
    },
}

/// Resolves an issuer to a signer, or the reason it is not ready (cert-manager's wording).
fn signer_for(store: &Store, issuer: &Value, cluster: bool) -> Result<Signer, (String, String)> {
    let spec = &issuer["spec"];
    if spec["selfSigned"].is_object() {
        return Ok(Signer::SelfSigned);
    }
    if let Some(secret_name) = spec["ca"]["secretName"].as_str() {
        let ns = if cluster {
            CERT_MANAGER_NS
        } else {
            ns_of(issuer)
        };
        let secret = store
            .get(&secrets(), Some(ns), secret_name)
            .ok_or_else(|| {
                (
                    "ErrGetKeyPair".to_string(),
                    format!(
                        "Error getting keypair for CA issuer: secrets \"{secret_name}\" not found"
                    ),
                )
            })?;
        let crt = secret_value(&secret, "tls.crt").unwrap_or_default();
        let key_pem = secret_value(&secret, "tls.key").unwrap_or_default();
        let chain = pki::parse_pem_chain(&crt).map_err(|e| {
            (
                "ErrInvalidKeyPair".to_string(),
                format!("Error getting keypair for CA issuer: {e}"),
            )
        })?;
        let key = pki::key_from_pem(&key_pem).map_err(|e| {
            (
                "ErrInvalidKeyPair".to_string(),
                format!("Error getting keypair for CA issuer: {e}"),
            )
        })?;
        // The key must belong to the certificate.
        let root_like = pki::Roots::from_ders(vec![chain[0].clone()]).map_err(|e| {
            (
                "ErrInvalidKeyPair".to_string(),
                format!("Error getting keypair for CA issuer: {e}"),
            )
        })?;
        if let Err(e) = pki::issuer_verifies(&chain[..1], &key, &root_like) {
            return Err(("ErrInvalidKeyPair".to_string(), format!("Error getting keypair for CA issuer: certificate and private key do not match: {e}")));
        }
        let ca_crt = secret_value(&secret, "ca.crt")
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| pki::to_pem(chain.last().unwrap_or(&chain[0])));
        return Ok(Signer::Ca {
            chain,
            ca_crt,
            key_pem,
        });
    }
    Err((
        "InvalidConfig".to_string(),
        "the simulator supports selfSigned and ca issuers only".to_string(),
    ))
}

fn reconcile_issuer(store: &Store, k: &crate::store::ResourceKey, issuer: &Value) {
    let cluster = k.plural == "clusterissuers";
    let (status, reason, message) = match signer_for(store, issuer, cluster) {
        Ok(Signer::SelfSigned) => ("True", "IsReady".to_string(), String::new()),
        Ok(Signer::Ca { .. }) => (
            "True",
            "KeyPairVerified".to_string(),
            "Signing CA verified".to_string(),
        ),
        Err((r, m)) => ("False", r, m),
    };
    let ns = if cluster { None } else { Some(ns_of(issuer)) };
    let generation = issuer["metadata"]["generation"].as_i64();
    if let Some(c) = condition(issuer, "Ready") {
        if c["status"] == status
            && c["reason"] == reason.as_str()
            && c["message"] == message.as_str()
            && c["observedGeneration"].as_i64() == generation
        {
            return;
        }
    }
    let _ = mutate_if_exists(store, k, ns, name_of(issuer), |o| {
        set_condition(o, "Ready", status, &reason, &message, generation);
        Ok(())
    });
}

fn dur(v: &Value) -> Option<Duration> {
    let s = v.as_str()?;
    parse_go_duration(s)
}

/// Parses a Go `time.Duration` string as cert-manager's `duration`/`renewBefore` use them
/// (`8760h`, `1h30m`, `90s`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let re = regex::Regex::new(r"^(?:(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns))+$").ok()?;
    if !re.is_match(s) {
        return None;
    }
    let part = regex::Regex::new(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)").ok()?;
    let mut total = 0f64;
    for cap in part.captures_iter(s) {
        let n: f64 = cap[1].parse().ok()?;
        total += n * match &cap[2] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            _ => 1e-9,
        };
    }
    Some(Duration::from_secs_f64(total))
}

fn reconcile_certificate(store: &Store, cert: &Value) -> Result<Option<f64>, StoreError> {
    let ns = ns_of(cert).to_string();
    let name = name_of(cert).to_string();
    let spec = &cert["spec"];
    let generation = cert["metadata"]["generation"].as_i64().unwrap_or(1);
    let Some(secret_name) = spec["secretName"].as_str() else {
        return Ok(None);
    };
    let secret = store.get(&secrets(), Some(&ns), secret_name);
    let now = pki::unix_now();
    let renewal = cert["status"]["renewalTime"]
        .as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second());
    let ready_gen = condition(cert, "Ready").and_then(|c| c["observedGeneration"].as_i64());
    let secret_ok = secret
        .as_ref()
        .and_then(|s| secret_value(s, "tls.crt"))
        .is_some_and(|c| pki::parse_pem_chain(&c).is_ok());
    let reason: Option<(&str, &str)> = if condition_true(cert, "Issuing") {
        Some((
            "ManuallyTriggered",
            "Certificate re-issuance manually triggered",
        ))
    } else if !secret_ok {
        Some((
            "DoesNotExist",
            "Issuing certificate as Secret does not exist",
        ))
    } else if renewal.is_some_and(|r| now >= r) {
        Some((
            "Renewing",
            "Renewing certificate as renewal was scheduled at the renewal time",
        ))
    } else if ready_gen != Some(generation) {
        Some((
            "SpecChanged",
            "Issuing certificate as the Certificate spec changed",
        ))
    } else {
        None
    };
    let Some((why, why_msg)) = reason else {
        return Ok(renewal.map(|r| (r - now) as f64));
    };

    // Resolve the issuer.
    let iref = &spec["issuerRef"];
    let iname = iref["name"].as_str().unwrap_or("");
    let cluster = iref["kind"].as_str() == Some("ClusterIssuer");
    let issuer = if cluster {
        store.get(&cluster_issuers(), None, iname)
    } else {
        store.get(&issuers(), Some(&ns), iname)
    };
    let signer = match issuer {
        None => Err((
            "Pending".to_string(),
            format!(
                "Referenced \"{}\" not found: {}.cert-manager.io \"{iname}\" not found",
                if cluster { "ClusterIssuer" } else { "Issuer" },
                if cluster { "clusterissuers" } else { "issuers" }
            ),
        )),
        Some(i) => signer_for(store, &i, cluster).map_err(|(_, m)| {
            (
                "Pending".to_string(),
                format!("Referenced issuer does not have a Ready status condition: {m}"),
            )
        }),
    };
    let signer = match signer {
        Ok(s) => s,
        Err((reason, message)) => {
            let already = condition(cert, "Ready")
                .is_some_and(|c| c["status"] == "False" && c["message"] == message.as_str())
                && condition_true(cert, "Issuing");
            if !already {
                mutate_if_exists(store, &certificates(), Some(&ns), &name, |o| {
                    set_condition(o, "Issuing", "True", why, why_msg, Some(generation));
                    set_condition(o, "Ready", "False", &reason, &message, Some(generation));
                    Ok(())
                })?;
            }
            return Ok(None);
        }
    };

    // Key: a new one with rotationPolicy Always (or no usable old key), else the old one.
    let pk = &spec["privateKey"];
    let algorithm = pk["algorithm"].as_str().unwrap_or("ECDSA");
    if algorithm != "ECDSA" {
        mutate_if_exists(store, &certificates(), Some(&ns), &name, |o| {
            set_condition(o, "Ready", "False", "Failed", &format!("the simulator issues ECDSA keys only; spec.privateKey.algorithm is {algorithm:?}"), Some(generation));
            remove_condition(o, "Issuing");
            Ok(())
        })?;
        return Ok(None);
    }
    let size = pk["size"].as_u64();
    let old_key = secret
        .as_ref()
        .and_then(|s| secret_value(s, "tls.key"))
        .and_then(|k| pki::key_from_pem(&k).ok());
    let key = match (pk["rotationPolicy"].as_str(), old_key) {
        (Some("Never"), Some(k)) => k,
        _ => pki::new_key(size).map_err(|e| StoreError::Invalid(e.to_string()))?,
    };
    let duration = dur(&spec["duration"]).unwrap_or(DEFAULT_DURATION);
    let not_before = now;
    let not_after = now + duration.as_secs() as i64;
    let dns: Vec<String> = spec["dnsNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let t = Template {
        common_name: spec["commonName"].as_str(),
        dns_names: &dns,
        is_ca: spec["isCA"].as_bool().unwrap_or(false),
        not_before,
        not_after,
        workload: false,
    };
    let (tls_crt, ca_crt) = match &signer {
        Signer::SelfSigned => {
            let der = pki::self_signed(&t, &key).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let p = pki::to_pem(&der);
            (p.clone(), p)
        }
        Signer::Ca {
            chain,
            ca_crt,
            key_pem,
        } => {
            let ca_key =
                pki::key_from_pem(key_pem).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let der = pki::signed_by(&t, &key, &chain[0], &ca_key)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            // As cert-manager: the leaf plus the CA's chain without a self-signed root.
            let mut out = pki::to_pem(&der);
            for c in chain {
                if !pki::cert_info(c).is_ok_and(|i| i.self_signed) {
                    out.push_str(&pki::to_pem(c));
                }
            }
            (out, ca_crt.clone())
        }
    };
    let key_pem = key.serialize_pem();
    let data = json!({"tls.crt": b64(&tls_crt), "tls.key": b64(&key_pem), "ca.crt": b64(&ca_crt)});
    let annotations = json!({
        "cert-manager.io/certificate-name": name,
        "cert-manager.io/issuer-name": iname,
        "cert-manager.io/issuer-kind": if cluster { "ClusterIssuer" } else { "Issuer" },
        "cert-manager.io/issuer-group": "cert-manager.io",
        "cert-manager.io/common-name": spec["commonName"].as_str().unwrap_or(""),
        "cert-manager.io/alt-names": dns.join(","),
    });
    let written = mutate_if_exists(store, &secrets(), Some(&ns), secret_name, |s| {
        s["data"] = data.clone();
        if let Some(o) = s.as_object_mut() {
            o.remove("stringData");
        }
        s["type"] = json!("kubernetes.io/tls");
        for (k, v) in annotations.as_object().into_iter().flatten() {
            s["metadata"]["annotations"][k] = v.clone();
        }
        Ok(())
    })?;
    if written.is_none() {
        let obj = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": secret_name, "namespace": ns, "annotations": annotations, "labels": {"controller.cert-manager.io/fao": "true"}},
            "data": data,
        });
        match store.create(&secrets(), obj) {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let renew_before = dur(&spec["renewBefore"])
        .map(|d| d.as_secs() as i64)
        .filter(|rb| *rb < duration.as_secs() as i64);
    let renewal_time = match renew_before {
        Some(rb) => not_after - rb,
        None => not_after - (duration.as_secs() as i64) / 3,
    };
    let ts =
        |s: i64| ts_rfc3339(jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH));
    mutate_if_exists(store, &certificates(), Some(&ns), &name, |o| {
        let rev = o["status"]["revision"].as_i64().unwrap_or(0) + 1;
        if !o["status"].is_object() {
            o["status"] = json!({});
        }
        o["status"]["revision"] = json!(rev);
        o["status"]["notBefore"] = json!(ts(not_before));
        o["status"]["notAfter"] = json!(ts(not_after));
        o["status"]["renewalTime"] = json!(ts(renewal_time));
        if let Some(m) = o["status"].as_object_mut() {
            m.remove("failedIssuanceAttempts");
            m.remove("lastFailureTime");
        }
        remove_condition(o, "Issuing");
        set_condition(
            o,
            "Ready",
            "True",
            "Ready",
            "Certificate is up to date and has not expired",
            Some(generation),
        );
        Ok(())
    })?;
    tracing::info!(namespace = %ns, certificate = %name, reason = why, "issued certificate");
    Ok(Some((renewal_time - now) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("8760h"),
            Some(Duration::from_secs(8760 * 3600))
        );
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1d"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}

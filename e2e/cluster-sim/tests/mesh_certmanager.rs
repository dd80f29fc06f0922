//! The simulated cert-manager: self-signed and CA issuers, Certificates into Secrets with
//! cert-manager's keys and status, renewal on demand and on schedule.

mod mesh_common;

use cluster_sim::mesh::{self, Durations, MeshConfig};
use cluster_sim::store::Store;
use mesh_common::*;
use serde_json::json;
use std::time::Duration;

fn empty() -> (Store, mesh::MeshHandle) {
    let store = Store::new();
    let cfg = MeshConfig {
        durations: Durations::fast(),
        ..MeshConfig::default()
    };
    let m = mesh::install(&store, &cfg).expect("install");
    (store, m)
}

fn cert(
    ns: &str,
    name: &str,
    issuer: &str,
    kind: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut spec = json!({
        "secretName": name, "commonName": format!("{name}.example"), "isCA": true,
        "privateKey": {"algorithm": "ECDSA", "rotationPolicy": "Always"},
        "issuerRef": {"name": issuer, "kind": kind, "group": "cert-manager.io"},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn ready(store: &Store, ns: &str, name: &str) -> Option<serde_json::Value> {
    let c = store.get(&k("cert-manager.io", "certificates"), Some(ns), name)?;
    c["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_issuer_waits_for_its_secret_then_issues_a_chain() {
    let (store, m) = empty();
    store
        .create(&k("", "namespaces"), json!({"metadata": {"name": "pki"}}))
        .unwrap();
    store
        .create(
            &k("cert-manager.io", "clusterissuers"),
            json!({"metadata": {"name": "ca"}, "spec": {"ca": {"secretName": "root"}}}),
        )
        .unwrap();
    store
        .create(
            &k("cert-manager.io", "certificates"),
            cert("pki", "leaf", "ca", "ClusterIssuer", json!({"isCA": false})),
        )
        .unwrap();
    wait_for(
        "the certificate to report its missing issuer",
        Duration::from_secs(5),
        || {
            ready(&store, "pki", "leaf").is_some_and(|r| {
                r["status"] == "False"
                    && r["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("secrets \"root\" not found")
            })
        },
    )
    .await;
    assert!(store.get(&k("", "secrets"), Some("pki"), "leaf").is_none());

    // The CA's key pair appears (self-signed root, in cert-manager's namespace).
    store
        .create(
            &k("", "namespaces"),
            json!({"metadata": {"name": "cert-manager"}}),
        )
        .unwrap();
    store.create(&k("cert-manager.io", "issuers"), json!({"metadata": {"name": "self", "namespace": "cert-manager"}, "spec": {"selfSigned": {}}})).unwrap();
    store
        .create(
            &k("cert-manager.io", "certificates"),
            cert("cert-manager", "root", "self", "Issuer", json!({})),
        )
        .unwrap();
    wait_for("the leaf to be issued", Duration::from_secs(5), || {
        ready(&store, "pki", "leaf").is_some_and(|r| r["status"] == "True")
    })
    .await;
    let root = secret_value(&store, "cert-manager", "root", "tls.crt").unwrap();
    assert_eq!(
        secret_value(&store, "cert-manager", "root", "ca.crt").unwrap(),
        root,
        "a self-signed certificate is its own CA"
    );
    let leaf = secret_value(&store, "pki", "leaf", "tls.crt").unwrap();
    assert_eq!(
        pem_ders(&leaf).len(),
        1,
        "the self-signed root is not appended to tls.crt"
    );
    assert_eq!(secret_value(&store, "pki", "leaf", "ca.crt").unwrap(), root);
    let s = store.get(&k("", "secrets"), Some("pki"), "leaf").unwrap();
    assert_eq!(s["type"], "kubernetes.io/tls");
    assert_eq!(
        s["metadata"]["annotations"]["cert-manager.io/issuer-kind"],
        "ClusterIssuer"
    );
    let (leaf_der, root_der) = (pem_ders(&leaf), pem_ders(&root));
    let (_, x) = x509_parser::parse_x509_certificate(&leaf_der[0]).unwrap();
    let (_, r) = x509_parser::parse_x509_certificate(&root_der[0]).unwrap();
    assert_eq!(x.issuer().to_string(), "CN=root.example");
    assert!(
        x.verify_signature(Some(r.public_key())).is_ok(),
        "signed by the CA's key"
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_renewal_bumps_the_revision_and_rotates_the_key() {
    let (store, m) = empty();
    store
        .create(&k("", "namespaces"), json!({"metadata": {"name": "pki"}}))
        .unwrap();
    store
        .create(
            &k("cert-manager.io", "issuers"),
            json!({"metadata": {"name": "self", "namespace": "pki"}, "spec": {"selfSigned": {}}}),
        )
        .unwrap();
    store
        .create(
            &k("cert-manager.io", "certificates"),
            cert(
                "pki",
                "always",
                "self",
                "Issuer",
                json!({"duration": "8760h", "renewBefore": "7320h"}),
            ),
        )
        .unwrap();
    let mut never = cert("pki", "never", "self", "Issuer", json!({}));
    never["spec"]["privateKey"]["rotationPolicy"] = json!("Never");
    store
        .create(&k("cert-manager.io", "certificates"), never)
        .unwrap();
    wait_for("issuance", Duration::from_secs(5), || {
        cert_revision(&store, "pki", "always") == 1 && cert_revision(&store, "pki", "never") == 1
    })
    .await;
    let c = store
        .get(&k("cert-manager.io", "certificates"), Some("pki"), "always")
        .unwrap();
    let nb: jiff::Timestamp = c["status"]["notBefore"].as_str().unwrap().parse().unwrap();
    let na: jiff::Timestamp = c["status"]["notAfter"].as_str().unwrap().parse().unwrap();
    let rt: jiff::Timestamp = c["status"]["renewalTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(na.as_second() - nb.as_second(), 8760 * 3600);
    assert_eq!(
        na.as_second() - rt.as_second(),
        7320 * 3600,
        "renewalTime = notAfter - renewBefore"
    );

    let (crt1, key1) = (
        secret_value(&store, "pki", "always", "tls.crt").unwrap(),
        secret_value(&store, "pki", "always", "tls.key").unwrap(),
    );
    let key_never = secret_value(&store, "pki", "never", "tls.key").unwrap();
    renew(&store, "pki", "always").await;
    renew(&store, "pki", "never").await;
    assert_ne!(
        secret_value(&store, "pki", "always", "tls.crt").unwrap(),
        crt1
    );
    assert_ne!(
        secret_value(&store, "pki", "always", "tls.key").unwrap(),
        key1,
        "rotationPolicy Always: a new key"
    );
    assert_eq!(
        secret_value(&store, "pki", "never", "tls.key").unwrap(),
        key_never,
        "rotationPolicy Never keeps the key"
    );
    let c = store
        .get(&k("cert-manager.io", "certificates"), Some("pki"), "always")
        .unwrap();
    assert!(
        c["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] != "Issuing"),
        "Issuing is cleared when done"
    );
    assert_eq!(ready(&store, "pki", "always").unwrap()["status"], "True");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_at_their_renewal_time() {
    let (store, m) = empty();
    store
        .create(&k("", "namespaces"), json!({"metadata": {"name": "pki"}}))
        .unwrap();
    store
        .create(
            &k("cert-manager.io", "issuers"),
            json!({"metadata": {"name": "self", "namespace": "pki"}, "spec": {"selfSigned": {}}}),
        )
        .unwrap();
    store
        .create(
            &k("cert-manager.io", "certificates"),
            cert(
                "pki",
                "short",
                "self",
                "Issuer",
                json!({"duration": "3s", "renewBefore": "1s"}),
            ),
        )
        .unwrap();
    wait_for("two renewals on schedule", Duration::from_secs(10), || {
        cert_revision(&store, "pki", "short") >= 3
    })
    .await;
    m.shutdown().await;
}

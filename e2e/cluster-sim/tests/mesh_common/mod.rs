//! Helpers for the mesh scenario tests: a demo cluster on a bare store, and the manual
//! rotation steps a human would do with kubectl/cmctl, done through the store.
#![allow(dead_code)]

use base64::Engine;
use cluster_sim::mesh::{self, Durations, MeshConfig, MeshHandle, Topology};
use cluster_sim::store::{ResourceKey, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub fn k(group: &str, plural: &str) -> ResourceKey {
    ResourceKey::new(group, plural)
}

pub async fn demo(durations: Durations) -> (Store, MeshHandle) {
    topology(Topology::Demo, durations).await
}

/// `demo-all-kinds`: the demo on three Nodes, with a StatefulSet, a DaemonSet and a CronJob.
pub async fn all_kinds(durations: Durations) -> (Store, MeshHandle) {
    topology(Topology::DemoAllKinds, durations).await
}

pub async fn topology(topology: Topology, durations: Durations) -> (Store, MeshHandle) {
    let store = Store::new();
    let cfg = MeshConfig {
        topology,
        pods: 0,
        durations,
        seed: 0,
        ..Default::default()
    };
    let mesh = mesh::install(&store, &cfg).expect("install");
    mesh.converged(Duration::from_secs(60))
        .await
        .expect("demo converges");
    (store, mesh)
}

pub fn secret_value(store: &Store, ns: &str, name: &str, key: &str) -> Option<String> {
    let s = store.get(&k("", "secrets"), Some(ns), name)?;
    let b = s["data"][key].as_str()?;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).ok()?).ok()
}

pub fn bundle(store: &Store) -> String {
    store
        .get(
            &k("", "configmaps"),
            Some("linkerd"),
            "linkerd-identity-trust-roots",
        )
        .expect("trust roots")["data"]["ca-bundle.crt"]
        .as_str()
        .expect("bundle key")
        .to_string()
}

pub fn set_bundle(store: &Store, pem: &str) {
    store
        .mutate(
            &k("", "configmaps"),
            Some("linkerd"),
            "linkerd-identity-trust-roots",
            |cm| {
                cm["data"]["ca-bundle.crt"] = json!(pem);
                Ok(())
            },
        )
        .expect("update bundle");
}

/// `kubectl rollout restart`.
pub fn restart(store: &Store, ns: &str, name: &str) {
    let stamp = format!("{}", jiff::Timestamp::now().as_nanosecond());
    store
        .mutate(&k("apps", "deployments"), Some(ns), name, |d| {
            d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
                json!(stamp);
            Ok(())
        })
        .expect("restart");
}

pub fn rollout_done(store: &Store, ns: &str, name: &str) -> bool {
    store
        .get(&k("apps", "deployments"), Some(ns), name)
        .is_some_and(|d| {
            let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
            let s = &d["status"];
            s["observedGeneration"].as_i64() >= d["metadata"]["generation"].as_i64()
                && s["updatedReplicas"].as_i64() == Some(want)
                && s["replicas"].as_i64() == Some(want)
                && s["availableReplicas"].as_i64() == Some(want)
        })
}

pub async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub const CONTROL_PLANE: [&str; 3] = [
    "linkerd-identity",
    "linkerd-destination",
    "linkerd-proxy-injector",
];
pub const APPS: [&str; 4] = ["web", "emoji", "voting", "vote-bot"];

/// Restarts Deployments and waits for every rollout to finish.
pub async fn restart_and_wait(store: &Store, targets: &[(&str, &str)]) {
    for (ns, name) in targets {
        restart(store, ns, name);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for (ns, name) in targets {
        wait_for(
            &format!("rollout of {ns}/{name}"),
            Duration::from_secs(30),
            || rollout_done(store, ns, name),
        )
        .await;
    }
}

pub fn control_plane() -> Vec<(&'static str, &'static str)> {
    CONTROL_PLANE.iter().map(|d| ("linkerd", *d)).collect()
}

pub fn apps() -> Vec<(&'static str, &'static str)> {
    APPS.iter().map(|d| ("emojivoto", *d)).collect()
}

pub fn cert_revision(store: &Store, ns: &str, name: &str) -> i64 {
    store
        .get(&k("cert-manager.io", "certificates"), Some(ns), name)
        .expect("certificate")["status"]["revision"]
        .as_i64()
        .unwrap_or(0)
}

/// `cmctl renew`: sets `Issuing=True` (ManuallyTriggered) and waits for the new revision.
pub async fn renew(store: &Store, ns: &str, name: &str) {
    let before = cert_revision(store, ns, name);
    store
        .mutate(&k("cert-manager.io", "certificates"), Some(ns), name, |c| {
            let conds = c["status"]["conditions"].as_array_mut().expect("conditions");
            conds.retain(|x| x["type"] != "Issuing");
            conds.push(json!({"type": "Issuing", "status": "True", "reason": "ManuallyTriggered", "message": "Certificate re-issuance manually triggered", "lastTransitionTime": "2026-01-01T00:00:00Z"}));
            Ok(())
        })
        .expect("renew");
    wait_for(
        &format!("renewal of {ns}/{name}"),
        Duration::from_secs(10),
        || cert_revision(store, ns, name) > before,
    )
    .await;
}

pub fn events(store: &Store, reason: &str) -> Vec<Arc<Value>> {
    store
        .list(&k("", "events"), Some("linkerd"))
        .0
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

pub fn pods_of(store: &Store, ns: &str, app: &str) -> Vec<Arc<Value>> {
    store
        .list(&k("", "pods"), Some(ns))
        .0
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .collect()
}

pub fn env_value(pod: &Value, name: &str) -> Option<String> {
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "linkerd-proxy")?["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
        .map(str::to_string)
}

/// Reads the chain a proxy presents: TLS 1.3, SNI = identity, no server verification.
pub async fn probe_chain(ip: &str, identity: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    probe_chain_port(ip, 4191, identity).await
}

/// The same probe on another admin port.
pub async fn probe_chain_port(ip: &str, port: u16, identity: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let tcp = tokio::net::TcpStream::connect((ip, port)).await?;
    probe_chain_over(tcp, identity).await
}

/// The same probe over any stream (e.g. a port-forward).
pub async fn probe_chain_over<S>(stream: S, identity: &str) -> anyhow::Result<Vec<Vec<u8>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    #[derive(Debug)]
    struct Any(Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            vec![rustls::SignatureScheme::ECDSA_NISTP256_SHA256]
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any(provider)))
        .with_no_client_auth();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tls = conn
        .connect(ServerName::try_from(identity.to_string())?, stream)
        .await?;
    let (_, c) = tls.get_ref();
    Ok(c.peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|d| d.to_vec())
        .collect())
}

/// Plain HTTP GET on the admin port.
pub async fn admin_get(ip: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, 4191)).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

pub fn pem_ders(text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(text.as_bytes())
        .expect("pem")
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

/// Every meshed pod's presented chain (probed like `linkerd identity`), by pod name.
pub async fn chains(store: &Store) -> Vec<(String, anyhow::Result<Vec<Vec<u8>>>)> {
    let mut out = Vec::new();
    for p in store.list(&k("", "pods"), None).0 {
        let Some(identity) = env_value(&p, "LINKERD2_PROXY_IDENTITY_LOCAL_NAME") else {
            continue;
        };
        let Some(ip) = p["status"]["podIP"].as_str() else {
            continue;
        };
        let name = format!(
            "{}/{}",
            p["metadata"]["namespace"].as_str().unwrap_or(""),
            p["metadata"]["name"].as_str().unwrap_or("")
        );
        out.push((name, probe_chain(ip, &identity).await));
    }
    out
}

/// Waits until every meshed pod presents a chain whose second certificate is `issuer_der`.
pub async fn wait_all_on_issuer(store: &Store, issuer_der: &[u8], timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let cs = chains(store).await;
        let behind: Vec<String> = cs
            .iter()
            .filter(|(_, c)| {
                c.as_ref()
                    .map_or(true, |c| c.get(1).map(|d| d.as_slice()) != Some(issuer_der))
            })
            .map(|(n, _)| n.clone())
            .collect();
        if behind.is_empty() && !cs.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pods still not on the new issuer after {timeout:?}: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

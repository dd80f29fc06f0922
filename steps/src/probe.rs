//! Asks proxies which certificate they serve right now.
//!
//! A Linkerd proxy terminates TLS on its admin port (4191) for clients that name its identity
//! in SNI. We open a TLS 1.3 connection with SNI = the pod's identity, let the proxy present
//! its chain, record it, and judge it ourselves by signature ([`crate::convergence`]). The TLS
//! client therefore accepts any issuer: it sends no data and only reads what the proxy
//! presents. It does prove who answered: the handshake signature must verify against the
//! presented leaf, the leaf must name the pod's identity and be valid now; anything else is
//! [`ProbeOutcome::Rejected`].
//!
//! Probes run with bounded concurrency and a per-pod timeout, either straight to the pod IP
//! (in-cluster, [`ProbeMode::Direct`]) or through the API server's port-forward
//! ([`ProbeMode::PortForward`], what a laptop can reach).

use crate::observe::MeshedPod;
use crate::pki::Certificate;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How probes reach proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ProbeMode {
    /// Dial `<podIP>:4191` directly (needs a pod network route, i.e. in-cluster).
    Direct,
    /// Tunnel through the API server's pod port-forward (works from anywhere kubectl works).
    PortForward,
}

impl fmt::Display for ProbeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeMode::Direct => "direct",
            ProbeMode::PortForward => "port-forward",
        })
    }
}

impl std::str::FromStr for ProbeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "direct" => Ok(ProbeMode::Direct),
            "port-forward" => Ok(ProbeMode::PortForward),
            other => Err(format!(
                "unknown probe mode {other:?}: expected \"direct\" or \"port-forward\""
            )),
        }
    }
}

/// How to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    pub mode: ProbeMode,
    /// At most this many probes in flight (0 is treated as 1).
    pub concurrency: usize,
    /// Per-pod budget, connection and handshake included.
    pub timeout: Duration,
    pub trust_domain: String,
    pub linkerd_ns: String,
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The chain the proxy presented, leaf first. Certificates after the first that do not
    /// parse are dropped; an empty chain means not even the leaf parsed.
    Chain(Vec<Certificate>),
    /// The proxy could not be reached; the text says why (with the OS error when there is one).
    Unreachable(String),
    /// No answer within the timeout.
    TimedOut,
    /// The pod has no proxy to probe.
    NoProxy,
    /// Something answered but did not prove it is this pod's proxy now: a certificate for
    /// another identity (a reused IP, a stale endpoint), a handshake signature that does not
    /// match the certificate, or a certificate outside its validity period. Never evidence of
    /// convergence.
    Rejected(String),
}

impl ProbeOutcome {
    /// What to remember of this answer: the same, with a presented leaf that the issuer
    /// presented after it vouches for kept without its DER ([`Certificate::vouched_by`]).
    pub fn remembered(&self) -> ProbeOutcome {
        if let ProbeOutcome::Chain(chain) = self {
            if let [leaf, issuer, ..] = chain.as_slice() {
                if let Some(vouched) = leaf.vouched_by(issuer) {
                    let mut chain = chain.clone();
                    chain[0] = vouched;
                    return ProbeOutcome::Chain(chain);
                }
            }
        }
        self.clone()
    }

    /// When the presented leaf certificate expires, if a chain was presented.
    pub fn leaf_not_after(&self) -> Option<jiff::Timestamp> {
        match self {
            ProbeOutcome::Chain(chain) => chain.first().map(Certificate::not_after),
            _ => None,
        }
    }
}

/// The identity a meshed pod's proxy serves:
/// `<sa>.<ns>.serviceaccount.identity.<linkerd_ns>.<trust_domain>`.
pub fn pod_identity(sa: &str, ns: &str, linkerd_ns: &str, trust_domain: &str) -> String {
    format!("{sa}.{ns}.serviceaccount.identity.{linkerd_ns}.{trust_domain}")
}

/// Probes every pod with at most `cfg.concurrency` in flight and returns `judge`'s verdict on
/// each answer, in the order of `pods`; `on_done` is called with each pod and its verdict as
/// it arrives.
///
/// Every probe is its own task, so the TLS handshakes and `judge` (a signature check, say)
/// spread over the runtime's worker threads and overlap the network waits of the probes still
/// in flight, instead of queueing on the caller's thread. Dropping the future aborts the
/// probes in flight.
#[tracing::instrument(
    name = "probe sweep",
    skip_all,
    fields(
        pods = pods.len(),
        mode = %cfg.mode,
        concurrency = cfg.concurrency.max(1),
        answered = tracing::field::Empty,
        unanswered = tracing::field::Empty,
    )
)]
pub async fn probe_pods<T>(
    client: &kube::Client,
    pods: Vec<MeshedPod>,
    cfg: &ProbeConfig,
    judge: impl Fn(ProbeOutcome) -> T + Send + Sync + 'static,
    on_done: impl Fn(&MeshedPod, &T),
) -> Vec<(MeshedPod, T)>
where
    T: Send + 'static,
{
    let judge = Arc::new(judge);
    let cfg = Arc::new(cfg.clone());
    let mut slots: Vec<(MeshedPod, Option<T>)> = pods.into_iter().map(|p| (p, None)).collect();
    let mut pending = 0..slots.len();
    let mut in_flight = tokio::task::JoinSet::new();
    // How many proxies presented a chain, for the sweep's span.
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let spawn = |set: &mut tokio::task::JoinSet<_>, i: usize, pod: MeshedPod| {
        let (client, cfg, judge) = (client.clone(), cfg.clone(), judge.clone());
        let answered = answered.clone();
        set.spawn(async move {
            let outcome = probe_pod(&client, &pod, &cfg).await;
            if matches!(outcome, ProbeOutcome::Chain(_)) {
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (i, judge(outcome))
        });
    };
    for i in pending.by_ref().take(cfg.concurrency.max(1)) {
        spawn(&mut in_flight, i, slots[i].0.clone());
    }
    while let Some(joined) = in_flight.join_next().await {
        match joined {
            Ok((i, verdict)) => {
                on_done(&slots[i].0, &verdict);
                slots[i].1 = Some(verdict);
            }
            // A probe that panicked is a bug: re-raise it rather than lose the pod.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled (the runtime is shutting down): judged below as unreachable.
            Err(_) => {}
        }
        if let Some(i) = pending.next() {
            spawn(&mut in_flight, i, slots[i].0.clone());
        }
    }
    let answered = answered.load(std::sync::atomic::Ordering::Relaxed);
    let span = tracing::Span::current();
    span.record("answered", answered);
    span.record("unanswered", slots.len() - answered);
    slots
        .into_iter()
        .map(|(pod, verdict)| {
            let verdict = verdict.unwrap_or_else(|| {
                judge(ProbeOutcome::Unreachable("the probe was cancelled".into()))
            });
            (pod, verdict)
        })
        .collect()
}

/// Probes one pod within `cfg.timeout`.
pub async fn probe_pod(client: &kube::Client, pod: &MeshedPod, cfg: &ProbeConfig) -> ProbeOutcome {
    if !pod.has_proxy {
        return ProbeOutcome::NoProxy;
    }
    let identity = pod_identity(
        &pod.service_account,
        &pod.pod.namespace,
        &cfg.linkerd_ns,
        &cfg.trust_domain,
    );
    let attempt = async {
        match cfg.mode {
            ProbeMode::Direct => {
                let Some(ip) = pod.ip.as_deref() else {
                    return ProbeOutcome::Unreachable("pod has no IP yet".into());
                };
                probe_addr(ip, pod.admin_port, &identity).await
            }
            ProbeMode::PortForward => probe_port_forward(client, pod, &identity).await,
        }
    };
    match tokio::time::timeout(cfg.timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::TimedOut,
    }
}

/// Probes a proxy at `ip:port` (no timeout of its own; see [`probe_pod`]).
pub async fn probe_addr(ip: &str, port: u16, identity: &str) -> ProbeOutcome {
    let addr = match ip.parse::<std::net::IpAddr>() {
        Ok(a) => std::net::SocketAddr::new(a, port),
        Err(_) => return ProbeOutcome::Unreachable(format!("pod IP {ip:?} is not an IP address")),
    };
    match tokio::net::TcpStream::connect(addr).await {
        Ok(tcp) => {
            let _ = tcp.set_nodelay(true);
            tls_probe(tcp, identity).await
        }
        Err(e) => ProbeOutcome::Unreachable(format!("connecting to {addr}: {e}")),
    }
}

/// Aborts the port-forward's background task however the probe ends.
struct AbortOnDrop(kube::api::Portforwarder);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn probe_port_forward(
    client: &kube::Client,
    pod: &MeshedPod,
    identity: &str,
) -> ProbeOutcome {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.pod.namespace);
    let port = pod.admin_port;
    let mut pf = match api.portforward(&pod.pod.name, &[port]).await {
        Ok(pf) => AbortOnDrop(pf),
        Err(e) => {
            return ProbeOutcome::Unreachable(format!("port-forward to {}:{port}: {e}", pod.pod))
        }
    };
    let (Some(stream), Some(error)) = (pf.0.take_stream(port), pf.0.take_error(port)) else {
        return ProbeOutcome::Unreachable("port-forward returned no stream".into());
    };
    // The error channel resolves with a message when the API server could not reach the pod,
    // or with nothing when the forward closes: the TLS side then sees EOF.
    let error = async {
        match error.await {
            Some(msg) => ProbeOutcome::Unreachable(format!("port-forward: {}", msg.trim())),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        outcome = tls_probe(stream, identity) => outcome,
        outcome = error => outcome,
    }
}

/// Runs a TLS 1.3 handshake over `io` with SNI `identity` and returns the chain the server
/// presented. A handshake that fails after the server sent its certificate still yields the
/// chain (the proxy may, for example, hang up on a client without one).
pub async fn tls_probe<IO>(io: IO, identity: &str) -> ProbeOutcome
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let server_name = match ServerName::try_from(identity.to_string()) {
        Ok(n) => n,
        Err(e) => {
            return ProbeOutcome::Unreachable(format!(
                "identity {identity:?} is not a valid SNI name: {e}"
            ))
        }
    };
    let recorder = Arc::new(ChainRecorder::default());
    let config = match client_config(recorder.clone()) {
        Ok(c) => c,
        Err(e) => return ProbeOutcome::Unreachable(format!("building the TLS client: {e}")),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let result = connector.connect(server_name, io).await;
    let signature = recorder.signature();
    if let Some(chain) = recorder.take() {
        let certs: Vec<Certificate> = chain
            .into_iter()
            .map(Certificate::from_der)
            .take_while(Result::is_ok)
            .flatten()
            .collect();
        if let Some(leaf) = certs.first() {
            if let Some(why) = unproven(leaf, identity, signature, jiff::Timestamp::now()) {
                return ProbeOutcome::Rejected(why);
            }
        }
        return ProbeOutcome::Chain(certs);
    }
    match result {
        Ok(_) => ProbeOutcome::Unreachable("TLS handshake completed without a certificate".into()),
        // A TLS server answered our ClientHello with a fatal alert: something is there, but it
        // will not answer as this pod's proxy (another pod's proxy on a reused IP, say).
        Err(e) => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::AlertReceived(alert)) => ProbeOutcome::Rejected(format!(
                "the TLS server there refused to answer as {identity} (alert {alert:?}): another pod may hold this address now"
            )),
            _ => ProbeOutcome::Unreachable(format!("TLS handshake: {e}")),
        },
    }
}

/// Why the answer does not prove it came from the proxy of the pod named `identity`, now.
fn unproven(
    leaf: &Certificate,
    identity: &str,
    signature: Option<Result<(), String>>,
    now: jiff::Timestamp,
) -> Option<String> {
    let dns_names = leaf.dns_names();
    if !dns_names.iter().any(|n| n == identity) {
        let names = if dns_names.is_empty() {
            "no DNS name".to_string()
        } else {
            dns_names.join(", ")
        };
        return Some(format!(
            "the certificate presented is for {names}, not {identity}: something other than this pod's proxy \
             answered (an IP reused by another pod, or a stale endpoint)"
        ));
    }
    match signature {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            return Some(format!(
                "the handshake signature does not verify against the certificate presented ({e}): whoever \
                 answered does not hold its key"
            ))
        }
        None => {
            return Some(
                "the connection closed before the proxy proved it holds the certificate's key".into(),
            )
        }
    }
    if !leaf.valid_at(now) {
        return Some(format!(
            "the certificate presented is outside its validity period ({} to {})",
            leaf.not_before(),
            leaf.not_after()
        ));
    }
    None
}

fn provider() -> &'static Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| {
        // AES-128-GCM first: every TLS 1.3 server has it, and its SHA-256 key schedule is
        // the cheaper one when thousands of proxies are probed.
        let mut p = rustls::crypto::ring::default_provider();
        p.cipher_suites.sort_by_key(|s| match s.suite() {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            _ => 1,
        });
        Arc::new(p)
    })
}

fn client_config(recorder: Arc<ChainRecorder>) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(recorder)
        .with_no_client_auth();
    // One configuration per probe and one probe per proxy: a ticket would never be used.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// A verifier that accepts any issuer and keeps the presented chain (judged afterwards by
/// signature against the active issuer), and records whether the handshake signature verifies
/// against the presented leaf.
#[derive(Debug, Default)]
struct ChainRecorder {
    chain: Mutex<Option<Vec<Vec<u8>>>>,
    signature: Mutex<Option<Result<(), String>>>,
}

impl ChainRecorder {
    fn take(&self) -> Option<Vec<Vec<u8>>> {
        self.chain.lock().map(|mut c| c.take()).unwrap_or(None)
    }
    fn signature(&self) -> Option<Result<(), String>> {
        self.signature.lock().map(|mut s| s.take()).unwrap_or(None)
    }
}

impl ServerCertVerifier for ChainRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.as_ref().to_vec())
            .collect();
        if let Ok(mut slot) = self.chain.lock() {
            *slot = Some(chain);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let verdict = rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        );
        if let Ok(mut slot) = self.signature.lock() {
            *slot = Some(verdict.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
        verdict
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // Linkerd's identities are ECDSA P-256 with SHA-256.
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::convergence::{cert_state, CertState};
    use crate::observe::PodRef;
    use crate::pki::testing::{issued, root, workload, Ca};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;
    use trust_rotation_crds::defaults::PROXY_ADMIN_PORT;

    /// A loopback address unlikely to collide with other tests running at the same time.
    pub(crate) fn loopback(n: u8) -> Ipv4Addr {
        let pid = std::process::id();
        Ipv4Addr::new(127, 200 + (pid % 50) as u8, (pid / 50 % 250) as u8 + 1, n)
    }

    pub(crate) fn server_config(leaf: &Ca, chain: &[&Ca]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = chain
            .iter()
            .map(|c| CertificateDer::from(c.cert.der().to_vec()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der()));
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        )
    }

    /// Serves TLS with `chain` on `ip:port`; reports the SNI of each handshake.
    pub(crate) async fn tls_server(
        ip: Ipv4Addr,
        port: u16,
        cfg: Arc<rustls::ServerConfig>,
    ) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
        let listener = TcpListener::bind((ip, port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = tx.send(tls.get_ref().1.server_name().map(str::to_string));
                    }
                });
            }
        });
        (port, rx)
    }

    /// Accepts connections and never answers. At each accept it records a lower bound of the
    /// probes in flight: connections accepted so far minus probes reported done.
    async fn silent_server(
        ip: Ipv4Addr,
        accepted: Arc<AtomicUsize>,
        done: Arc<AtomicUsize>,
        max_in_flight: Arc<AtomicUsize>,
    ) {
        let listener = TcpListener::bind((ip, PROXY_ADMIN_PORT)).await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let n = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let in_flight = n.saturating_sub(done.load(Ordering::SeqCst));
                max_in_flight.fetch_max(in_flight, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    // Hold the connection until the client gives up.
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
    }

    pub(crate) fn pod(name: &str, ip: Option<Ipv4Addr>) -> MeshedPod {
        MeshedPod::from(crate::observe::PodFacts {
            pod: PodRef::new("emojivoto", name),
            owner: Some(format!("deployment/{name}")),
            service_account: name.into(),
            ip: ip.map(|i| i.to_string()),
            ready: true,
            deleting: false,
            deletion_deadline: None,
            proxy_version: None,
            control_plane: false,
            has_proxy: true,
            trust_root_sha256: None,
            trust_anchors_env: None,
            proxy_started_at: None,
            created_at: None,
            admin_port: PROXY_ADMIN_PORT,
        })
    }

    pub(crate) fn offline_client() -> kube::Client {
        // Never contacted in direct mode.
        let cfg = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        kube::Client::try_from(cfg).unwrap()
    }

    #[test]
    fn identity_format() {
        assert_eq!(
            pod_identity("web", "emojivoto", "linkerd", "cluster.local"),
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local"
        );
        assert_eq!(
            "port-forward".parse::<ProbeMode>(),
            Ok(ProbeMode::PortForward)
        );
        assert_eq!(ProbeMode::Direct.to_string(), "direct");
        assert!("sideways".parse::<ProbeMode>().is_err());
    }

    #[tokio::test]
    async fn reads_the_presented_chain_with_identity_sni() {
        let r = root("root.linkerd.cluster.local");
        let issuer = issued("identity.linkerd.cluster.local", &r, true);
        let other = issued("identity.linkerd.cluster.local", &r, true);
        let leaf = workload(
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            &issuer,
            false,
        );
        let (port, mut sni) = tls_server(
            Ipv4Addr::LOCALHOST,
            0,
            server_config(&leaf, &[&leaf, &issuer]),
        )
        .await;
        let identity = pod_identity("web", "emojivoto", "linkerd", "cluster.local");
        let outcome = probe_addr("127.0.0.1", port, &identity).await;
        let ProbeOutcome::Chain(chain) = &outcome else {
            panic!("expected a chain, got {outcome:?}");
        };
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].fingerprint(), leaf.parsed().fingerprint());
        assert_eq!(chain[1].fingerprint(), issuer.parsed().fingerprint());
        assert_eq!(
            sni.recv().await.flatten().as_deref(),
            Some(identity.as_str())
        );
        assert_eq!(cert_state(&outcome, &issuer.parsed()), CertState::Active);
        assert_eq!(
            cert_state(&outcome, &other.parsed()),
            CertState::OtherIssuer {
                issuer_fingerprint: Some(issuer.parsed().fingerprint().into())
            }
        );
    }

    #[tokio::test]
    async fn plaintext_peer_is_unreachable_not_a_panic() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            if let Ok((mut tcp, _)) = listener.accept().await {
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut tcp,
                    b"HTTP/1.1 400 Bad Request\r\n\r\n",
                )
                .await;
            }
        });
        match probe_addr(
            "127.0.0.1",
            port,
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
        )
        .await
        {
            ProbeOutcome::Unreachable(why) => assert!(why.contains("TLS handshake"), "{why}"),
            other => panic!("expected unreachable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn probe_pods_reports_every_outcome_in_order_within_the_bound() {
        let r = root("root");
        let issuer = issued("issuer", &r, true);
        let leaf = workload(
            "good.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            &issuer,
            false,
        );
        let good_ip = loopback(1);
        let closed_ip = loopback(2);
        let accepted = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        tls_server(
            good_ip,
            PROXY_ADMIN_PORT,
            server_config(&leaf, &[&leaf, &issuer]),
        )
        .await;
        let slow_ips: Vec<Ipv4Addr> = (10..14).map(loopback).collect();
        for ip in &slow_ips {
            silent_server(*ip, accepted.clone(), done.clone(), max.clone()).await;
        }
        let mut no_proxy = pod("noproxy", Some(good_ip));
        no_proxy.has_proxy = false;
        // Slow pods first, so that the in-flight bound is measured while only they run.
        let mut pods: Vec<MeshedPod> = slow_ips
            .iter()
            .enumerate()
            .map(|(i, ip)| pod(&format!("slow{i}"), Some(*ip)))
            .collect();
        pods.extend([
            pod("good", Some(good_ip)),
            pod("closed", Some(closed_ip)),
            pod("pending", None),
            no_proxy,
        ]);
        let cfg = ProbeConfig {
            mode: ProbeMode::Direct,
            concurrency: 2,
            timeout: Duration::from_millis(300),
            trust_domain: "cluster.local".into(),
            linkerd_ns: "linkerd".into(),
        };
        let results = probe_pods(
            &offline_client(),
            pods.clone(),
            &cfg,
            |o| o,
            |_, _| {
                done.fetch_add(1, Ordering::SeqCst);
            },
        )
        .await;
        assert_eq!(done.load(Ordering::SeqCst), pods.len());
        let names: Vec<&str> = results.iter().map(|(p, _)| p.pod.name.as_str()).collect();
        let expected: Vec<&str> = pods.iter().map(|p| p.pod.name.as_str()).collect();
        assert_eq!(names, expected);
        for (p, o) in &results[..4] {
            assert_eq!(o, &ProbeOutcome::TimedOut, "{}", p.pod);
        }
        assert!(matches!(&results[4].1, ProbeOutcome::Chain(c) if c.len() == 2));
        match &results[5].1 {
            ProbeOutcome::Unreachable(why) => {
                assert!(why.contains(&format!("{closed_ip}:4191")), "{why}");
                assert!(why.contains("refused"), "OS error text expected: {why}");
            }
            other => panic!("closed port: {other:?}"),
        }
        assert_eq!(
            results[6].1,
            ProbeOutcome::Unreachable("pod has no IP yet".into())
        );
        assert_eq!(results[7].1, ProbeOutcome::NoProxy);
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        let seen = max.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&seen),
            "at most 2 probes in flight, saw {seen}"
        );
    }

    /// A server presenting `chain` but signing the handshake with `key`.
    fn server_with_key(chain: &[&Ca], key: &Ca) -> Arc<rustls::ServerConfig> {
        #[derive(Debug)]
        struct Fixed(Arc<rustls::sign::CertifiedKey>);
        impl rustls::server::ResolvesServerCert for Fixed {
            fn resolve(
                &self,
                _: rustls::server::ClientHello<'_>,
            ) -> Option<Arc<rustls::sign::CertifiedKey>> {
                Some(self.0.clone())
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signer = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.key.serialize_der(),
            )))
            .unwrap();
        let certs = chain
            .iter()
            .map(|c| CertificateDer::from(c.cert.der().to_vec()))
            .collect();
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Fixed(Arc::new(rustls::sign::CertifiedKey::new(
                    certs, signer,
                ))))),
        )
    }

    #[tokio::test]
    async fn an_answer_that_does_not_prove_the_pods_identity_is_rejected() {
        let r = root("root");
        let issuer = issued("identity", &r, true);
        let identity = pod_identity("web", "emojivoto", "linkerd", "cluster.local");
        let probe = |cfg: Arc<rustls::ServerConfig>| {
            let identity = identity.clone();
            async move {
                let (port, _) = tls_server(Ipv4Addr::LOCALHOST, 0, cfg).await;
                probe_addr("127.0.0.1", port, &identity).await
            }
        };
        // Another pod's proxy answers on this pod's (reused) IP.
        let voting = workload(
            "voting.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            &issuer,
            false,
        );
        match probe(server_config(&voting, &[&voting, &issuer])).await {
            ProbeOutcome::Rejected(why) => assert!(
                why.contains("voting.emojivoto") && why.contains("reused"),
                "{why}"
            ),
            other => panic!("expected a rejection, got {other:?}"),
        }
        // The right certificate, replayed by something that does not hold its key.
        let web = workload(
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            &issuer,
            false,
        );
        let impostor = workload(
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            &issuer,
            false,
        );
        match probe(server_with_key(&[&web, &issuer], &impostor)).await {
            ProbeOutcome::Rejected(why) => assert!(why.contains("does not hold its key"), "{why}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
        // An expired certificate is no evidence either.
        let expired = workload(
            "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
            &issuer,
            true,
        );
        let outcome = probe(server_config(&expired, &[&expired, &issuer])).await;
        match &outcome {
            ProbeOutcome::Rejected(why) => {
                assert!(why.contains("outside its validity period"), "{why}")
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(matches!(
            cert_state(&outcome, &issuer.parsed()),
            CertState::Invalid(_)
        ));
    }
}

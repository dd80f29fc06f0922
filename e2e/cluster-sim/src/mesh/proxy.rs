//! One Linkerd proxy per meshed pod: trust anchors read from its env once, at start; a
//! workload certificate from identity at start and again at 70% of the remaining lifetime
//! (clamped by `LINKERD2_PROXY_IDENTITY_{MIN,MAX}_REFRESH`); certificates that do not chain
//! to its roots are rejected and the old one kept. Its admin server on `<podIP>:4191`
//! speaks TLS 1.3 (SNI = the pod's identity; presents the workload chain) and plain HTTP
//! (`/live`, `/ready`, `/metrics`, `/env.json`) on the same port.

use super::pki::{self, Roots, Usage};
use super::Shared;
use bytes::Bytes;
use http_body_util::Full;
use rcgen::KeyPair;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Parses a proxy duration with linkerd2-proxy's grammar, `^\s*(\d+)(ms|s|m|h|d)?\s*$`;
/// a bare number is accepted only for 0.
pub fn parse_proxy_duration(s: &str) -> Result<Duration, String> {
    let re = regex::Regex::new(r"^\s*(\d+)(ms|s|m|h|d)?\s*$").map_err(|e| e.to_string())?;
    let caps = re.captures(s).ok_or_else(|| format!("invalid duration {s:?}: expected a number and one unit of ms, s, m, h or d, like \"5m\""))?;
    let n: u64 = caps[1]
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: number out of range"))?;
    let unit_ms: u64 = match caps.get(2).map(|m| m.as_str()) {
        None if n == 0 => 0,
        None => {
            return Err(format!(
                "invalid duration {s:?}: a unit (ms, s, m, h, d) is required"
            ))
        }
        Some("ms") => 1,
        Some("s") => 1_000,
        Some("m") => 60_000,
        Some("h") => 3_600_000,
        _ => 86_400_000,
    };
    Ok(Duration::from_millis(n.saturating_mul(unit_ms)))
}

/// The certificate a proxy currently holds.
#[derive(Clone)]
pub struct Held {
    pub chain: Arc<Vec<CertificateDer<'static>>>,
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 over the chain without the leaf: pods with the same issuer chain share it.
    pub chain_id: String,
    pub certified: Arc<CertifiedKey>,
}

#[derive(Default)]
struct Counters {
    ok: u64,
    error: u64,
    refreshed_at: f64,
    /// Why the last renewal failed, until one succeeds (the oracle names it).
    last_error: Option<String>,
}

pub struct Proxy {
    pub namespace: String,
    pub pod: String,
    pub identity: String,
    /// In identity pods: the pod whose controller certifies this proxy (over localhost).
    pub local_identity: Option<String>,
    pub ip: Ipv4Addr,
    pub roots: Arc<Roots>,
    pub env: Vec<(String, String)>,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    key: KeyPair,
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    held: RwLock<Option<Held>>,
    counters: Mutex<Counters>,
    certified: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Starts a proxy the way linkerd2-proxy starts: any bad identity setting fails it.
    pub(crate) fn new(
        shared: &Shared,
        pod: &Value,
        ip: Ipv4Addr,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let get = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let anchors = get(super::ENV_TRUST_ANCHORS)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| anyhow::anyhow!("{} is not set", super::ENV_TRUST_ANCHORS))?;
        let roots = shared
            .proxies
            .roots_for(anchors)
            .map_err(|e| anyhow::anyhow!("{}: {e}", super::ENV_TRUST_ANCHORS))?;
        let min_refresh = match get(super::ENV_MIN_REFRESH) {
            Some(v) => parse_proxy_duration(v)
                .map_err(|e| anyhow::anyhow!("{}: {e}", super::ENV_MIN_REFRESH))?,
            None => shared.durations.proxy_min_refresh,
        };
        let max_refresh = match get(super::ENV_MAX_REFRESH) {
            Some(v) => parse_proxy_duration(v)
                .map_err(|e| anyhow::anyhow!("{}: {e}", super::ENV_MAX_REFRESH))?,
            None => shared.durations.proxy_max_refresh,
        };
        let ns = super::ns_of(pod).to_string();
        let sa = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let identity = get(super::ENV_LOCAL_NAME)
            .filter(|v| !v.contains("$("))
            .map(str::to_string)
            .unwrap_or_else(|| identity_name(sa, &ns));
        let key = pki::new_key(None)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_ecdsa_type(&der)
            .map_err(|e| anyhow::anyhow!("proxy key: {e}"))?;
        let (certified, _) = tokio::sync::watch::channel(false);
        let local_identity = (ns == super::LINKERD_NS
            && pod["metadata"]["labels"][super::LABEL_COMPONENT] == "identity")
            .then(|| super::name_of(pod).to_string());
        Ok(Self {
            local_identity,
            namespace: ns,
            pod: super::name_of(pod).to_string(),
            identity,
            ip,
            roots,
            env,
            min_refresh,
            max_refresh,
            key,
            signing_key,
            held: RwLock::new(None),
            counters: Mutex::new(Counters::default()),
            certified,
        })
    }

    pub fn held(&self) -> Option<Held> {
        self.held.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn certified(&self) -> tokio::sync::watch::Receiver<bool> {
        self.certified.subscribe()
    }

    /// Accepts a chain from identity if it chains to this proxy's roots; else keeps the
    /// old certificate and counts an error.
    pub(crate) fn accept(&self, chain: Vec<CertificateDer<'static>>) -> Result<i64, String> {
        let now = pki::unix_now();
        let result = pki::verify(&chain, &self.roots, now, Usage::Server)
            .map_err(|e| {
                format!(
                    "certificate from identity does not chain to this proxy's trust anchors: {e}"
                )
            })
            .and_then(|_| pki::cert_info(&chain[0]).map_err(|e| e.to_string()));
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(info) => {
                c.ok += 1;
                c.last_error = None;
                c.refreshed_at = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
                let tail: Vec<u8> = chain[1..].iter().flat_map(|d| d.iter().copied()).collect();
                let held = Held {
                    chain_id: pki::sha256_hex(&tail),
                    certified: Arc::new(CertifiedKey::new(chain.clone(), self.signing_key.clone())),
                    chain: Arc::new(chain),
                    not_before: info.not_before,
                    not_after: info.not_after,
                };
                *self.held.write().unwrap_or_else(|e| e.into_inner()) = Some(held);
                self.certified.send_replace(true);
                Ok(info.not_after)
            }
            Err(e) => {
                c.error += 1;
                Err(e)
            }
        }
    }

    /// Records a renewal that failed, refused by identity or by [`Proxy::accept`] (a success
    /// clears it).
    fn renewal_failed(&self, error: &str) {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error = Some(error.to_string());
    }

    /// Why the last renewal failed, if none has succeeded since.
    pub fn last_renewal_error(&self) -> Option<String> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error
            .clone()
    }

    pub(crate) fn metrics(&self) -> String {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let exp = self.held().map_or(0, |h| h.not_after);
        format!(
            "# HELP control_identity_cert_expiration_timestamp_seconds Time when the this proxy's current mTLS identity certificate will expire (in seconds since the UNIX epoch).\n\
             # TYPE control_identity_cert_expiration_timestamp_seconds gauge\n\
             control_identity_cert_expiration_timestamp_seconds {exp}\n\
             # HELP control_identity_cert_refresh_timestamp_seconds Time when the this proxy's current mTLS identity certificate were last updated.\n\
             # TYPE control_identity_cert_refresh_timestamp_seconds gauge\n\
             control_identity_cert_refresh_timestamp_seconds {:.3}\n\
             # HELP control_identity_cert_refreshes_total The total number of times this proxy's mTLS identity certificate has been refreshed by the Identity provider.\n\
             # TYPE control_identity_cert_refreshes_total counter\n\
             control_identity_cert_refreshes_total{{result=\"ok\"}} {}\n\
             control_identity_cert_refreshes_total{{result=\"error\"}} {}\n",
            c.refreshed_at, c.ok, c.error
        )
    }
}

/// `<sa>.<ns>.serviceaccount.identity.linkerd.cluster.local`
pub fn identity_name(sa: &str, ns: &str) -> String {
    format!(
        "{sa}.{ns}.serviceaccount.identity.{}.{}",
        super::LINKERD_NS,
        super::TRUST_DOMAIN
    )
}

/// Every running proxy, by pod, and the trust-anchor sets they share.
#[derive(Default)]
pub struct Registry {
    map: Mutex<HashMap<(String, String), Arc<Proxy>>>,
    roots: Mutex<HashMap<String, Arc<Roots>>>,
    /// Pods with a proxy container whose kubelet task runs (started, starting or crashing).
    meshed_pods: std::sync::atomic::AtomicUsize,
}

impl Registry {
    pub(crate) fn meshed_pod_started(&self) {
        self.meshed_pods
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn meshed_pod_stopped(&self) {
        self.meshed_pods
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Meshed pods the kubelet runs, whether or not their proxy is up.
    pub fn meshed_pods(&self) -> usize {
        self.meshed_pods.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Parses an anchors env value once per distinct value (10,000 proxies share a few).
    pub fn roots_for(&self, anchors: &str) -> Result<Arc<Roots>, pki::PkiError> {
        let mut cache = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = cache.get(anchors) {
            return Ok(r.clone());
        }
        let r = Arc::new(Roots::from_pem(anchors)?);
        if cache.len() > 64 {
            cache.clear();
        }
        cache.insert(anchors.to_string(), r.clone());
        Ok(r)
    }

    pub fn insert(&self, p: Arc<Proxy>) {
        self.lock().insert((p.namespace.clone(), p.pod.clone()), p);
    }
    pub fn remove(&self, ns: &str, name: &str) {
        self.lock().remove(&(ns.to_string(), name.to_string()));
    }
    /// Removes this very proxy (a newer pod of the same name keeps its own).
    pub fn remove_exact(&self, p: &Arc<Proxy>) {
        let mut m = self.lock();
        let k = (p.namespace.clone(), p.pod.clone());
        if m.get(&k).is_some_and(|cur| Arc::ptr_eq(cur, p)) {
            m.remove(&k);
        }
    }
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<Proxy>> {
        self.lock()
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }
    pub fn all(&self) -> Vec<Arc<Proxy>> {
        self.lock().values().cloned().collect()
    }
    pub fn stop_all(&self) {
        self.lock().clear();
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Proxy>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Certifies at start, then refreshes at 70% of the remaining lifetime, clamped; after a
/// failure (no identity, a rejected certificate) retries with back-off up to MIN_REFRESH.
pub(crate) async fn refresh_loop(
    shared: Arc<Shared>,
    proxy: Arc<Proxy>,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let outcome = shared
            .identity
            .certify(
                &shared,
                &proxy.identity,
                &proxy.key,
                proxy.local_identity.as_deref(),
            )
            .and_then(|chain| proxy.accept(chain));
        let wait = match outcome {
            Ok(not_after) => {
                failures = 0;
                let remaining = (not_after - pki::unix_now()).max(0) as f64;
                Duration::from_secs_f64(remaining * 0.7)
                    .clamp(proxy.min_refresh, proxy.max_refresh.max(proxy.min_refresh))
            }
            Err(e) => {
                tracing::debug!(pod = %proxy.pod, namespace = %proxy.namespace, error = %e, "certification failed");
                proxy.renewal_failed(&e);
                // Exponential back-off from 100ms, up to MIN_REFRESH.
                failures = failures.saturating_add(1);
                let backoff = Duration::from_millis(100).saturating_mul(1 << failures.min(10));
                backoff.min(proxy.min_refresh.max(Duration::from_millis(100)))
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[derive(Debug)]
struct Resolver {
    identity: String,
    proxy: std::sync::Weak<Proxy>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("pod", &self.pod)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if hello.server_name() != Some(self.identity.as_str()) {
            return None;
        }
        if !hello
            .signature_schemes()
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
        {
            return None;
        }
        self.proxy.upgrade()?.held().map(|h| h.certified)
    }
}

fn tls_config(proxy: &Arc<Proxy>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for d in &proxy.roots.ders {
        roots.add(d.clone())?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Resolver {
            identity: proxy.identity.clone(),
            proxy: Arc::downgrade(proxy),
        }));
    // The configuration lives for one connection, so a session ticket could never be
    // redeemed: do not issue any.
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// Serves the admin port on the pod's listener until `cancel`, answering each connection
/// `latency` after it was accepted (a simulated network round trip).
pub(crate) fn serve_admin(
    proxy: Arc<Proxy>,
    mut listener: super::listeners::AdminListener,
    latency: Duration,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let weak = Arc::downgrade(&proxy);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let Some(proxy) = weak.upgrade() else { return };
            // linkerd2-proxy sets TCP_NODELAY on its sockets; so does the simulated one.
            let _ = stream.set_nodelay(true);
            let cancel = cancel.clone();
            tokio::spawn(async move {
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                let mut first = [0u8; 1];
                let peeked =
                    tokio::time::timeout(Duration::from_secs(10), stream.peek(&mut first)).await;
                if !matches!(peeked, Ok(Ok(1))) {
                    return;
                }
                if first[0] == 0x16 {
                    // Built per connection: 10,000 idle proxies hold no TLS state.
                    let acceptor = match tls_config(&proxy) {
                        Ok(cfg) => tokio_rustls::TlsAcceptor::from(cfg),
                        Err(e) => {
                            tracing::warn!(error = %e, "proxy TLS configuration failed");
                            return;
                        }
                    };
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    {
                        serve_http(proxy, tls, cancel).await;
                    }
                } else {
                    serve_http(proxy, stream, cancel).await;
                }
            });
        }
    });
    Ok(())
}

async fn serve_http<IO>(proxy: Arc<Proxy>, io: IO, cancel: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let weak = Arc::downgrade(&proxy);
    drop(proxy);
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let weak = weak.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(weak.upgrade(), &req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = conn => {}
    }
}

fn handle(
    proxy: Option<Arc<Proxy>>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let reply = |code: u16, ctype: &str, body: String| {
        hyper::Response::builder()
            .status(code)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
    };
    let Some(proxy) = proxy else {
        return reply(503, "text/plain", "proxy stopped\n".into());
    };
    if req.method() != hyper::Method::GET {
        return reply(405, "text/plain", "method not allowed\n".into());
    }
    match req.uri().path() {
        "/live" => reply(200, "text/plain", "live\n".into()),
        "/ready" => {
            if proxy.held().is_some() {
                reply(200, "text/plain", "ready\n".into())
            } else {
                reply(503, "text/plain", "not ready\n".into())
            }
        }
        "/metrics" => reply(200, "text/plain; version=0.0.4", proxy.metrics()),
        "/env.json" => {
            let wanted: Vec<&str> = req
                .uri()
                .query()
                .map(|q| q.split('&').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            let mut map = serde_json::Map::new();
            for (k, v) in &proxy.env {
                if wanted.is_empty() || wanted.contains(&k.as_str()) {
                    map.insert(k.clone(), Value::String(v.clone()));
                }
            }
            reply(200, "application/json", Value::Object(map).to_string())
        }
        _ => reply(404, "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_duration_grammar() {
        assert_eq!(parse_proxy_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_proxy_duration(" 300s "), Ok(Duration::from_secs(300)));
        assert_eq!(
            parse_proxy_duration("250ms"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(parse_proxy_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_proxy_duration("0"), Ok(Duration::ZERO));
        assert!(parse_proxy_duration("1h30m").is_err());
        assert!(parse_proxy_duration("10").is_err());
        assert!(parse_proxy_duration("-5s").is_err());
        assert!(parse_proxy_duration("5 m").is_err());
    }
}

//! The simulator's Kubernetes API server: HTTPS on loopback with a generated CA and a bearer
//! token, discovery, every verb on every served type, watch, patch (merge, JSON, strategic,
//! server-side apply), subresources (`status`, pod `portforward`), `Status` errors, fault
//! injection and its own `/metrics`. kube-rs and kubectl use it unchanged.

pub mod builtin;
pub mod crd;
pub mod discovery;
pub mod events;
pub mod faults;
pub mod gc;
pub mod metrics;
pub mod patch;
pub mod portforward;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod table;
pub mod tls;
pub mod watch;
pub mod workloads;

use crate::store::Store;
use anyhow::Context;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use faults::{FaultConfig, Faults, Injected};
use http::{header, Method, Request, StatusCode};
use metrics::Metrics;
use status::{json_response, ApiError, ApiResult};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Everything a request handler needs.
pub struct ApiState {
    pub store: Store,
    pub token: String,
    pub faults: Faults,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// Compiled schemas of the custom resource types.
    pub schemas: crd::SchemaCache,
}

/// A running API server.
pub struct ApiServer {
    addr: SocketAddr,
    credentials: tls::Credentials,
    state: Arc<ApiState>,
    task: JoinHandle<()>,
    gc: JoinHandle<()>,
    /// Mirrors Events between `v1` and `events.k8s.io/v1` ([`events`]).
    events: JoinHandle<()>,
}

impl ApiServer {
    /// Binds `addr` (port 0 picks one), generates the PKI and starts serving `store`.
    pub async fn start(
        store: Store,
        addr: SocketAddr,
        faults: FaultConfig,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the API server to {addr}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let (tls_config, credentials) = tls::generate(addr)?;
        let state = Arc::new(ApiState {
            store: store.clone(),
            token: credentials.token.clone(),
            faults: Faults::new(faults, seed),
            metrics: Arc::new(Metrics::default()),
            shutdown: CancellationToken::new(),
            schemas: crd::SchemaCache::default(),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let acceptor = TlsAcceptor::from(tls_config);
        let cancel = state.shutdown.clone();
        let task = tokio::spawn(accept_loop(listener, acceptor, app, cancel));
        let gc = tokio::spawn(gc::run(store.clone(), state.shutdown.clone()));
        let events = tokio::spawn(events::run(store, state.shutdown.clone()));
        Ok(Self {
            addr,
            credentials,
            state,
            task,
            gc,
            events,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn credentials(&self) -> &tls::Credentials {
        &self.credentials
    }

    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.state.metrics
    }

    /// Stops accepting, ends every open connection (watches included) and waits for it.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        let _ = self.task.await;
        let _ = self.gc.await;
        let _ = self.events.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    cancel: CancellationToken,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => {
                let (tcp, _) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app = app.clone();
                let cancel = cancel.clone();
                conns.spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .with_upgrades();
                    tokio::select! {
                        _ = conn => {}
                        _ = cancel.cancelled() => {}
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Query parameters, decoded.
pub type Query = HashMap<String, String>;

pub fn parse_query(q: Option<&str>) -> Query {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    Metrics,
    OpenApiV3Index,
    OpenApiV3(String),
    OpenApiV2,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList { group: String, version: String },
    Resource(Target),
    NotFound,
}

/// A resource request's coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn route(path: &str) -> Route {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["metrics"] => Route::Metrics,
        ["openapi", "v3"] => Route::OpenApiV3Index,
        ["openapi", "v3", rest @ ..] => Route::OpenApiV3(rest.join("/")),
        ["openapi", "v2"] | ["swagger.json"] => Route::OpenApiV2,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v] => Route::ResourceList {
            group: String::new(),
            version: v.to_string(),
        },
        ["apis", g, v] => Route::ResourceList {
            group: g.to_string(),
            version: v.to_string(),
        },
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let t = |ns: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>| {
        Route::Resource(Target {
            group: group.to_string(),
            version: version.to_string(),
            namespace: ns.map(str::to_string),
            plural: plural.to_string(),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        })
    };
    match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            t(None, "namespaces", Some(ns), Some(sub))
        }
        ["namespaces", ns, plural] => t(Some(ns), plural, None, None),
        ["namespaces", ns, plural, name] => t(Some(ns), plural, Some(name), None),
        ["namespaces", ns, plural, name, sub] => t(Some(ns), plural, Some(name), Some(sub)),
        [plural] => t(None, plural, None, None),
        [plural, name] => t(None, plural, Some(name), None),
        [plural, name, sub] => t(None, plural, Some(name), Some(sub)),
        _ => Route::NotFound,
    }
}

/// The verb a request is, as Kubernetes names it (for metrics and fault rules).
pub fn verb_of(method: &Method, target: &Target, query: &Query) -> &'static str {
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), target.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("POST", true) if target.subresource.is_some() => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn handle(State(st): State<Arc<ApiState>>, req: Request<Body>) -> Response {
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(metrics::user_agent_product)
        .unwrap_or_else(|| "unknown".to_string());
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query());
    let route = route(&path);
    let (verb, resource) = match &route {
        Route::Resource(t) => {
            let verb = verb_of(req.method(), t, &query);
            let res = match &t.subresource {
                Some(s) => format!("{}/{}", t.plural, s),
                None => t.plural.clone(),
            };
            (verb.to_string(), res)
        }
        Route::Metrics | Route::Health => {
            ("get".to_string(), path.trim_start_matches('/').to_string())
        }
        _ => ("get".to_string(), "discovery".to_string()),
    };
    let method = req.method().clone();
    let resp = match dispatch(&st, req, route, query, &verb, &resource, &ua).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let code = resp.status().as_u16();
    tracing::debug!(%method, %path, %verb, %resource, client = %ua, code, "request");
    st.metrics.record(&verb, &resource, &ua, code);
    resp
}

fn authorized(st: &ApiState, req: &Request<Body>) -> bool {
    let expected = format!("Bearer {}", st.token);
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

async fn dispatch(
    st: &Arc<ApiState>,
    req: Request<Body>,
    route: Route,
    query: Query,
    verb: &str,
    resource: &str,
    client: &str,
) -> ApiResult<Response> {
    if matches!(route, Route::Health) {
        return Ok((StatusCode::OK, "ok").into_response());
    }
    if !authorized(st, &req) {
        return Err(ApiError::unauthorized());
    }
    if matches!(route, Route::Metrics) {
        let body = st.metrics.render(&st.store);
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return Ok(resp);
    }
    let latency = st.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Route::Resource(_) = &route {
        if let Some(Injected::Error { code, retry_after }) =
            st.faults.error_for(verb, resource, client)
        {
            let (reason, message) = match code {
                429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later (injected fault)".to_string()),
                503 => ("ServiceUnavailable", "the server is currently unable to handle the request (injected fault)".to_string()),
                504 => ("Timeout", "the server was unable to return a response in the time allotted (injected fault)".to_string()),
                409 => ("Conflict", "the object has been modified; please apply your changes to the latest version and try again (injected fault)".to_string()),
                _ => ("InternalError", "an error on the server (\"injected fault\") has prevented the request from succeeding".to_string()),
            };
            let mut e = ApiError::new(code, reason, message);
            if matches!(code, 429 | 503) {
                e.retry_after = Some(retry_after);
                e.details = serde_json::json!({"retryAfterSeconds": retry_after});
            }
            return Err(e);
        }
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match route {
        Route::Version => Ok(json_response(StatusCode::OK, &discovery::version())),
        Route::CoreVersions => Ok(discovery::core_versions(st, &accept)),
        Route::Groups => Ok(discovery::groups(st, &accept)),
        Route::Group(g) => discovery::group(st, &g),
        Route::ResourceList { group, version } => discovery::resource_list(st, &group, &version),
        Route::OpenApiV3Index => Ok(discovery::openapi_v3_index(st)),
        Route::OpenApiV3(path) => discovery::openapi_v3(st, &path),
        Route::OpenApiV2 => Err(ApiError::unknown_resource()),
        Route::Resource(target) => {
            if target.subresource.as_deref() == Some("portforward") && target.plural == "pods" {
                let (mut parts, _body) = req.into_parts();
                let upgrade =
                    axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &())
                        .await
                        .map_err(|e| {
                            ApiError::bad_request(format!(
                                "port-forward needs a WebSocket upgrade: {e}"
                            ))
                        })?;
                return portforward::handle(st, &target, &query, upgrade);
            }
            resources::handle(st, req, target, query, &accept).await
        }
        Route::Health | Route::Metrics | Route::NotFound => Err(ApiError::unknown_resource()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resources_and_subresources() {
        let r = route("/api/v1/namespaces/ns/pods/p/portforward");
        assert!(
            matches!(r, Route::Resource(Target { ref namespace, ref subresource, .. }) if namespace.as_deref() == Some("ns") && subresource.as_deref() == Some("portforward"))
        );
        let r = route("/api/v1/namespaces/ns");
        assert!(
            matches!(r, Route::Resource(Target { ref plural, ref name, ref namespace, .. }) if plural == "namespaces" && name.as_deref() == Some("ns") && namespace.is_none())
        );
        let r = route("/api/v1/namespaces/ns/status");
        assert!(
            matches!(r, Route::Resource(Target { ref plural, ref subresource, .. }) if plural == "namespaces" && subresource.as_deref() == Some("status"))
        );
        let r = route("/apis/apps/v1/deployments");
        assert!(
            matches!(r, Route::Resource(Target { ref group, ref name, .. }) if group == "apps" && name.is_none())
        );
        assert_eq!(
            route("/apis/apps/v1"),
            Route::ResourceList {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(route("/nonsense"), Route::NotFound);
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("labelSelector=app%20in%20(a%2Cb)&watch=true&x"));
        assert_eq!(
            q.get("labelSelector").map(String::as_str),
            Some("app in (a,b)")
        );
        assert_eq!(q.get("x").map(String::as_str), Some(""));
        let q = parse_query(Some("a=%&b=%4"));
        assert_eq!(q.get("a").map(String::as_str), Some("%"));
        assert_eq!(q.get("b").map(String::as_str), Some("%4"));
    }
}

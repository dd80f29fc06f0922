//! The admin server: `/live`, `/ready` (every watch synced and none failing for long) and
//! `/metrics` (the replica's own metrics always; the rotation's only while it leads).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why this replica is not ready, if it is not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Shared with the controller.
#[derive(Clone)]
pub struct AdminState {
    pub ready: Readiness,
    /// Exported by every replica (leadership, watch errors, process).
    pub registry: Arc<Registry>,
    /// The rotation's metrics: exported only while `leading` says so.
    pub leader_registry: Arc<Registry>,
    pub leading: crate::metrics::Leading,
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(s): State<AdminState>) -> Response {
    match (s.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut body = String::new();
    let encoded = encode_registry(&mut body, &s.registry)
        .and_then(|()| {
            if (s.leading)() {
                encode_registry(&mut body, &s.leader_registry)
            } else {
                Ok(())
            }
        })
        .and_then(|()| encode_eof(&mut body));
    match encoded {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// Binds the admin address (so a busy port fails at start) and returns the bound address and
/// the server future.
pub async fn bind(
    addr: SocketAddr,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let app = Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --admin-addr {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let server = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((bound, server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
        let (head, body) = buf.split_once("\r\n\r\n").unwrap();
        (code, head.to_lowercase(), body.to_string())
    }

    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn live_ready_after_sync_and_openmetrics_rotation_metrics_only_from_the_leader() {
        let mut leader_registry = Registry::default();
        let metrics = trust_rotation_steps::metrics::Metrics::register(&mut leader_registry);
        metrics.observe_status(&Default::default());
        let ready = Arc::new(AtomicBool::new(false));
        let leading = Arc::new(AtomicBool::new(false));
        let mut registry = Registry::default();
        let flag = leading.clone();
        let leading_fn: crate::metrics::Leading = Arc::new(move || flag.load(Ordering::SeqCst));
        crate::metrics::register(&mut registry, leading_fn.clone());
        let r = ready.clone();
        let state = AdminState {
            ready: Arc::new(move || {
                if r.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("watch of pods not synced yet".into())
                }
            }),
            registry: Arc::new(registry),
            leader_registry: Arc::new(leader_registry),
            leading: leading_fn,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = bind("127.0.0.1:0".parse().unwrap(), state, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
        let handle = tokio::spawn(server);
        assert_eq!(get(addr, "/live").await.0, 200);
        let (code, _, body) = get(addr, "/ready").await;
        assert_eq!(code, 503, "not ready before the first sync");
        assert!(body.contains("watch of pods not synced yet"), "{body}");
        ready.store(true, Ordering::SeqCst);
        assert_eq!(get(addr, "/ready").await.0, 200);
        // A standby: its own metrics, no rotation gauge.
        let (code, head, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            head.contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        assert!(body.contains("trust_rotation_leader 0"), "{body}");
        assert!(!body.contains("trust_rotation_phase"), "{body}");
        assert_eq!(body.matches("# EOF").count(), 1);
        // The leader: both.
        leading.store(true, Ordering::SeqCst);
        let (_, _, body) = get(addr, "/metrics").await;
        assert!(body.contains("trust_rotation_leader 1"), "{body}");
        assert!(
            body.contains("trust_rotation_phase{phase=\"Synced\"} 1"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"));
        assert_eq!(body.matches("# EOF").count(), 1);
        let _ = tx.send(());
        handle.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_busy_admin_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let state = AdminState {
            ready: Arc::new(|| Ok(())),
            registry: Arc::new(Registry::default()),
            leader_registry: Arc::new(Registry::default()),
            leading: Arc::new(|| true),
        };
        let err = bind(addr, state, async {}).await.err().unwrap().to_string();
        assert!(
            err.contains("--admin-addr") && err.contains(&addr.to_string()),
            "{err}"
        );
    }
}

//! The admin server: `/live`, `/ready` (after the first watch sync) and `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared with the controller.
#[derive(Clone)]
pub struct AdminState {
    pub ready: Arc<AtomicBool>,
    pub registry: Arc<Registry>,
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(s): State<AdminState>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the first watch sync\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
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

    #[tokio::test]
    async fn live_ready_after_sync_and_openmetrics() {
        let mut registry = Registry::default();
        let metrics = trust_rotation_steps::metrics::Metrics::register(&mut registry);
        metrics.observe_status(&Default::default());
        let ready = Arc::new(AtomicBool::new(false));
        let state = AdminState {
            ready: ready.clone(),
            registry: Arc::new(registry),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = bind("127.0.0.1:0".parse().unwrap(), state, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
        let handle = tokio::spawn(server);
        assert_eq!(get(addr, "/live").await.0, 200);
        assert_eq!(
            get(addr, "/ready").await.0,
            503,
            "not ready before the first sync"
        );
        ready.store(true, Ordering::SeqCst);
        assert_eq!(get(addr, "/ready").await.0, 200);
        let (code, head, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            head.contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        assert!(
            body.contains("trust_rotation_phase{phase=\"Synced\"} 1"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"));
        let _ = tx.send(());
        handle.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_busy_admin_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let state = AdminState {
            ready: Arc::default(),
            registry: Arc::new(Registry::default()),
        };
        let err = bind(addr, state, async {}).await.err().unwrap().to_string();
        assert!(
            err.contains("--admin-addr") && err.contains(&addr.to_string()),
            "{err}"
        );
    }
}

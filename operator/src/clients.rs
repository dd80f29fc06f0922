//! The operator's three Kubernetes clients, each with the timeouts and retries its job needs:
//!
//! - **watch** (every replica): watches and start-up reads. No retry layer (watchers back
//!   off by themselves); a read timeout longer than the server-side watch timeout.
//! - **lease** (every replica): Lease reads and writes only. No retry layer (kube's retries
//!   of 429/503/504 with `Retry-After` could hold a renewal past its deadline) and timeouts
//!   shorter than the renew deadline.
//! - **leader** (the reconcile): every write the operator makes (status, Events, Secrets,
//!   ConfigMaps, Deployments, Namespaces) and the reads of the steps. Its TCP connections
//!   refuse to send a single byte while this replica does not lead ([`Leadership`]): a
//!   write admitted just before the renew deadline is on the wire before it, and nothing
//!   at all leaves after it, even from a process that was stopped mid-request and resumed.
//!   No retry layer either: the runner retries with its own backoff.
//!
//! Every request carries `User-Agent: trust-rotation-operator/<version>`, so API server
//! audit logs name the operator.

use crate::lease::Leadership;
use http::{HeaderName, HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{BoxError, ServiceBuilder};

/// How long a connection may take to open (leader and watch clients).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a blocked write to the API server may wait (leader and watch clients).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the leader client waits for the next bytes of a response.
pub const LEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The server-side timeout the watchers ask for (`timeoutSeconds`): a healthy watch is
/// re-established at least this often, so the watch client's read timeout can be bounded.
pub const WATCH_TIMEOUT_SECS: u32 = 60;
/// How long the watch client waits for the next bytes of a response (longer than a watch
/// lasts, so only a dead connection hits it).
pub const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(WATCH_TIMEOUT_SECS as u64 + 20);

fn user_agent() -> (HeaderName, HeaderValue) {
    (
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!(
            "trust-rotation-operator/",
            env!("CARGO_PKG_VERSION")
        )),
    )
}

fn tuned(
    mut config: kube::Config,
    read: Duration,
    connect: Duration,
    write: Duration,
) -> kube::Config {
    config.default_retry = false;
    config.read_timeout = Some(read);
    config.connect_timeout = Some(connect);
    config.write_timeout = Some(write);
    // The read timeout counts from each request, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
    config.headers.push(user_agent());
    config
}

/// The client for watches and start-up reads.
pub fn watch_client(config: &kube::Config) -> Result<kube::Client, kube::Error> {
    kube::Client::try_from(tuned(
        config.clone(),
        WATCH_READ_TIMEOUT,
        CONNECT_TIMEOUT,
        WRITE_TIMEOUT,
    ))
}

/// The client for the Lease: every timeout at most `deadline`.
pub fn lease_client(
    config: &kube::Config,
    deadline: Duration,
) -> Result<kube::Client, kube::Error> {
    kube::Client::try_from(tuned(config.clone(), deadline, deadline, deadline))
}

/// The reconcile's client: sends nothing while `leadership` says this replica does not lead.
pub fn leader_client(
    config: &kube::Config,
    leadership: Leadership,
) -> Result<kube::Client, kube::Error> {
    let config = tuned(
        config.clone(),
        LEADER_READ_TIMEOUT,
        CONNECT_TIMEOUT,
        WRITE_TIMEOUT,
    );
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let gated = GatedConnector {
        inner: http,
        leadership,
    };
    let https = config.rustls_https_connector_with_connector(gated)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// Opens TCP connections whose writes fail while this replica does not lead.
#[derive(Clone)]
struct GatedConnector {
    inner: HttpConnector,
    leadership: Leadership,
}

impl tower::Service<Uri> for GatedConnector {
    type Response = GatedIo<<HttpConnector as tower::Service<Uri>>::Response>;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let leadership = self.leadership.clone();
        Box::pin(async move {
            let io = connecting.await?;
            Ok(GatedIo { io, leadership })
        })
    }
}

/// A connection that refuses to write while this replica does not lead.
struct GatedIo<T> {
    io: T,
    leadership: Leadership,
}

fn not_leading() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "this replica does not hold the leadership Lease: it sends nothing to the API server",
    )
}

impl<T: Read + Unpin> Read for GatedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for GatedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.leadership.is_leading() {
            return Poll::Ready(Err(not_leading()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.leadership.is_leading() {
            return Poll::Ready(Err(not_leading()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for GatedIo<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP server on loopback that counts the requests it receives.
    async fn counting_server() -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        let _ = tx.send(text.lines().next().unwrap_or_default().to_string());
                        let body = r#"{"kind":"Status","apiVersion":"v1","status":"Success"}"#;
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn the_leader_client_sends_nothing_once_leadership_ends() {
        let (addr, mut seen) = counting_server().await;
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let leadership = Leadership::elected();
        let client = leader_client(&config, leadership.clone()).unwrap();
        let req = || {
            http::Request::delete("/api/v1/namespaces/default/configmaps/x")
                .body(Vec::new())
                .unwrap()
        };

        // A standby: nothing reaches the server.
        assert!(client.request_text(req()).await.is_err());
        // Leading: the request goes out, with the operator's user agent.
        leadership.renewed(Instant::now(), Duration::from_millis(300));
        client
            .request_text(req())
            .await
            .expect("sent while leading");
        assert_eq!(
            seen.recv().await.as_deref(),
            Some("DELETE /api/v1/namespaces/default/configmaps/x HTTP/1.1")
        );
        // The deadline passes with the pooled connection still open: nothing more is sent.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let err = client
            .request_text(req())
            .await
            .expect_err("refused after the deadline");
        assert!(format!("{err:?}").contains("leadership"), "{err:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(seen.try_recv().is_err(), "no request reached the server");
        // Without leader election the client always sends.
        let always = leader_client(&config, Leadership::always()).unwrap();
        always.request_text(req()).await.expect("sent");
    }
}

//! A recording proxy between one operator process and the simulator: the operator talks
//! plain HTTP to it on loopback (its own kubeconfig, with the simulator's token), the proxy
//! forwards every byte to the simulator over TLS and writes down each request (when it
//! arrived, method, path). With one proxy per replica, the log says which replica sent
//! every request, which the simulator's own log (one token, one user agent) cannot tell.
//! It can also hold requests whose path contains a string for a while (a stalling API
//! server).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as the proxy received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub method: String,
    pub path: String,
}

impl Recorded {
    /// A request that changes something (anything but GET/HEAD).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
    }

    pub fn is_lease(&self) -> bool {
        self.path.contains("/leases")
    }
}

#[derive(Default)]
struct Stall {
    path_contains: String,
    until: Option<Instant>,
}

/// A running proxy.
pub struct Recorder {
    log: Arc<Mutex<Vec<Recorded>>>,
    stall: Arc<Mutex<Stall>>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Recorder {
    /// Starts a proxy in front of the simulator whose kubeconfig is `sim_kubeconfig`.
    pub async fn start(sim_kubeconfig: &Path) -> Recorder {
        let kc: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(sim_kubeconfig).expect("the sim kubeconfig"),
        )
        .expect("kubeconfig YAML");
        let cluster = &kc["clusters"][0]["cluster"];
        let server: http::Uri = cluster["server"]
            .as_str()
            .expect("a server")
            .parse()
            .expect("uri");
        let ca_pem = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(
                    cluster["certificate-authority-data"]
                        .as_str()
                        .expect("the simulator's CA"),
                )
                .expect("base64 CA")
        };
        let token = kc["users"][0]["user"]["token"]
            .as_str()
            .expect("a token")
            .to_string();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&ca_pem) {
            let cert: rustls_pki_types::CertificateDer<'static> = cert.expect("CA PEM");
            roots.add(cert).expect("CA");
        }
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );
        let upstream = format!(
            "{}:{}",
            server.host().expect("host"),
            server.port_u16().expect("port")
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: rec\n  cluster:\n    server: http://{addr}\n\
                 users:\n- name: rec\n  user:\n    token: {token}\ncontexts:\n- name: rec\n  context:\n    cluster: rec\n    user: rec\n\
                 current-context: rec\n"
            ),
        )
        .expect("kubeconfig");
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let stall: Arc<Mutex<Stall>> = Arc::default();
        let (l, s) = (log.clone(), stall.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (tls, upstream, l, s) = (tls.clone(), upstream.clone(), l.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = proxy(conn, &upstream, tls, l, s).await;
                });
            }
        });
        Recorder {
            log,
            stall,
            kubeconfig,
            _dir: dir,
        }
    }

    /// The kubeconfig that points at this proxy.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Writes (anything but GET) received after `since`.
    pub fn writes_after(&self, since: Instant) -> Vec<Recorded> {
        self.log()
            .into_iter()
            .filter(|r| r.at > since && r.is_write())
            .collect()
    }

    /// Holds requests whose path contains `path_contains` for `duration` from now.
    pub fn stall(&self, path_contains: &str, duration: Duration) {
        let mut s = self.stall.lock().unwrap();
        s.path_contains = path_contains.to_string();
        s.until = Some(Instant::now() + duration);
    }
}

async fn proxy(
    client: TcpStream,
    upstream: &str,
    tls: Arc<rustls::ClientConfig>,
    log: Arc<Mutex<Vec<Recorded>>>,
    stall: Arc<Mutex<Stall>>,
) -> std::io::Result<()> {
    let tcp = TcpStream::connect(upstream).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost")
        .map_err(std::io::Error::other)?
        .to_owned();
    let server = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let (client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = tokio::io::split(server);
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
    });
    let mut reader = BufReader::new(client_r);
    loop {
        // One request head.
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).await? == 0 {
                down.abort();
                return Ok(());
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let mut first = text.lines().next().unwrap_or_default().split_whitespace();
        let method = first.next().unwrap_or_default().to_string();
        let path = first.next().unwrap_or_default().to_string();
        let header = |name: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let hold = {
            let s = stall.lock().unwrap();
            s.until
                .filter(|u| *u > Instant::now() && path.contains(&s.path_contains))
        };
        if let Some(until) = hold {
            tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
        }
        log.lock().unwrap().push(Recorded {
            at: Instant::now(),
            method,
            path,
        });
        server_w.write_all(&head).await?;
        if header("upgrade").is_some() {
            // A WebSocket (port-forward): raw bytes from here on.
            tokio::io::copy(&mut reader, &mut server_w).await?;
            return Ok(());
        }
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size_line = Vec::new();
                reader.read_until(b'\n', &mut size_line).await?;
                server_w.write_all(&size_line).await?;
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&size_line)
                        .trim()
                        .split(';')
                        .next()
                        .unwrap_or("0"),
                    16,
                )
                .unwrap_or(0);
                let mut chunk = vec![0u8; size + 2];
                reader.read_exact(&mut chunk).await?;
                server_w.write_all(&chunk).await?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).await?;
            server_w.write_all(&body).await?;
        }
        server_w.flush().await?;
    }
}

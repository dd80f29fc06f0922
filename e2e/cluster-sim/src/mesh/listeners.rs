//! Proxies' admin-port listeners, in this process while its open-file limit allows and in
//! helper processes beyond it.
//!
//! Every meshed pod listens on `<podIP>:4191`, one open file per proxy, and one process may
//! hold only as many files as its hard `RLIMIT_NOFILE` (20,000 on some machines; 50,000
//! pods need more). A real cluster spreads them over many nodes; the simulator spreads them
//! over helper processes, each with its own limit: a helper binds the addresses it is asked
//! to, accepts, and hands every accepted connection to this process over a Unix socket
//! (`SCM_RIGHTS`). So the proxy that answers is the same in-process one either way, and a
//! connection costs this process one file only while it is open. Helpers are started on
//! demand (when this process and every helper so far are full) and die with the simulator.
//!
//! A helper is the simulator's own executable (or any program that calls
//! [`serve_helper_if_asked`] first thing in `main`), started with
//! `CLUSTER_SIM_LISTENER_HELPER=1` and one end of a `SOCK_SEQPACKET` pair as its stdin.
//! Messages (one per packet): to the helper `bind <id> <ip> <port>` and `close <id>`; from
//! it `bound <id>`, `failed <id> <errno>` and `conn <id>` with the connection's descriptor.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};

/// The environment variable that makes a program a listener helper.
pub const HELPER_ENV: &str = "CLUSTER_SIM_LISTENER_HELPER";

/// Open files a process needs besides its listeners (API connections, watches, probes and
/// port-forwards in flight; in a helper, connections on their way to the simulator).
pub const FD_HEADROOM: u64 = 1024;

/// Where admin-port listeners may live.
#[derive(Clone, Debug, Default)]
pub struct ListenerConfig {
    /// Listeners per process, this one and each helper; `None`: the open-file limit less
    /// [`FD_HEADROOM`].
    pub per_process: Option<usize>,
    /// The executable helpers run (see the module docs); `None`: no helpers, and a mesh this
    /// process cannot hold is refused at start.
    pub helper_exe: Option<PathBuf>,
}

impl ListenerConfig {
    /// Helpers that run the current executable, with the open-file limit's share per process:
    /// for a program whose `main` calls [`serve_helper_if_asked`] first.
    pub fn helpers_from_this_executable() -> Self {
        Self {
            per_process: None,
            helper_exe: std::env::current_exe().ok(),
        }
    }
}

/// Binds admin ports (see the module docs).
pub struct AdminPorts {
    per_process: usize,
    local: Arc<AtomicUsize>,
    helper_exe: Option<PathBuf>,
    helpers: tokio::sync::Mutex<Vec<Arc<Helper>>>,
}

/// A bound admin port. Dropping it closes the port (in its helper, if it lives in one).
pub struct AdminListener {
    inner: Inner,
}

enum Inner {
    Local {
        listener: tokio::net::TcpListener,
        count: Arc<AtomicUsize>,
    },
    Remote {
        helper: Arc<Helper>,
        id: u64,
        conns: mpsc::UnboundedReceiver<std::net::TcpStream>,
    },
}

impl AdminListener {
    /// The next connection.
    pub async fn accept(&mut self) -> std::io::Result<tokio::net::TcpStream> {
        match &mut self.inner {
            Inner::Local { listener, .. } => listener.accept().await.map(|(s, _)| s),
            Inner::Remote { conns, .. } => match conns.recv().await {
                Some(s) => {
                    s.set_nonblocking(true)?;
                    tokio::net::TcpStream::from_std(s)
                }
                // The helper is gone: nothing will come again.
                None => std::future::pending().await,
            },
        }
    }

    /// The bound address, when this process holds the port.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match &self.inner {
            Inner::Local { listener, .. } => listener.local_addr(),
            Inner::Remote { .. } => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the port is held by a listener helper",
            )),
        }
    }
}

impl Drop for AdminListener {
    fn drop(&mut self) {
        match &self.inner {
            Inner::Local { count, .. } => {
                count.fetch_sub(1, Ordering::SeqCst);
            }
            Inner::Remote { helper, id, .. } => helper.close(*id),
        }
    }
}

/// The hard open-file limit, after raising the soft limit to it.
fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

impl AdminPorts {
    /// Raises this process's open-file limit and refuses a mesh of `pods` extra pods that it
    /// cannot hold without helpers, when there are none.
    pub fn new(cfg: &ListenerConfig, pods: usize) -> anyhow::Result<Self> {
        let limit = raise_nofile();
        tracing::debug!(limit, "open-file limit");
        let per_process = cfg
            .per_process
            .unwrap_or(limit.saturating_sub(FD_HEADROOM) as usize)
            .max(1);
        if cfg.helper_exe.is_none() && pods > per_process {
            anyhow::bail!(
                "{pods} meshed pods need about {} open files (one admin-port listener per \
                 proxy, plus {FD_HEADROOM} for connections), but this process may open only \
                 {limit} (the hard limit, `ulimit -Hn`) and has no helper processes to spread \
                 them over; run the `cluster-sim` binary (it starts helpers itself), raise the \
                 limit (as root, or LimitNOFILE= for a service) or ask for at most \
                 {per_process} pods",
                pods as u64 + FD_HEADROOM
            );
        }
        Ok(Self {
            per_process,
            local: Arc::new(AtomicUsize::new(0)),
            helper_exe: cfg.helper_exe.clone(),
            helpers: tokio::sync::Mutex::new(Vec::new()),
        })
    }

    /// Binds `ip:port`: here while this process has room, else in a helper.
    pub async fn bind(&self, ip: Ipv4Addr, port: u16) -> std::io::Result<AdminListener> {
        let reserved = self
            .local
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.per_process).then_some(n + 1)
            })
            .is_ok();
        if reserved || self.helper_exe.is_none() {
            if !reserved {
                self.local.fetch_add(1, Ordering::SeqCst);
            }
            let count = self.local.clone();
            let bound = std::net::TcpListener::bind((ip, port))
                .and_then(|l| l.set_nonblocking(true).map(|_| l))
                .and_then(tokio::net::TcpListener::from_std);
            return match bound {
                Ok(listener) => Ok(AdminListener {
                    inner: Inner::Local { listener, count },
                }),
                Err(e) => {
                    count.fetch_sub(1, Ordering::SeqCst);
                    Err(e)
                }
            };
        }
        let helper = self.helper_with_room().await?;
        helper.bind(ip, port).await.inspect_err(|_| {
            helper.held.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// Helper processes started so far.
    pub async fn helpers(&self) -> usize {
        self.helpers.lock().await.len()
    }

    /// A live helper with a free slot (reserved for the caller), started if none has one.
    async fn helper_with_room(&self) -> std::io::Result<Arc<Helper>> {
        let mut helpers = self.helpers.lock().await;
        helpers.retain(|h| !h.dead.load(Ordering::SeqCst) || h.held.load(Ordering::SeqCst) > 0);
        for h in helpers.iter() {
            if h.dead.load(Ordering::SeqCst) {
                continue;
            }
            let ok = h
                .held
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < self.per_process).then_some(n + 1)
                })
                .is_ok();
            if ok {
                return Ok(h.clone());
            }
        }
        let exe = self.helper_exe.as_ref().ok_or_else(|| {
            std::io::Error::other("no helper executable to hold more admin-port listeners")
        })?;
        let h = Helper::spawn(exe, helpers.len())?;
        h.held.fetch_add(1, Ordering::SeqCst);
        helpers.push(h.clone());
        Ok(h)
    }
}

/// One helper process, seen from the simulator.
struct Helper {
    index: usize,
    out: mpsc::UnboundedSender<String>,
    next_id: AtomicU64,
    held: AtomicUsize,
    dead: AtomicBool,
    pending: Mutex<HashMap<u64, oneshot::Sender<std::io::Result<()>>>>,
    conns: Mutex<HashMap<u64, mpsc::UnboundedSender<std::net::TcpStream>>>,
}

fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

impl Helper {
    fn spawn(exe: &PathBuf, index: usize) -> std::io::Result<Arc<Self>> {
        let (ours, theirs) = seqpacket_pair()?;
        // Tokio has no seqpacket type; its UnixStream only registers the socket with the
        // reactor here, every read and write is a recvmsg/send of one whole packet.
        let ours = std::os::unix::net::UnixStream::from(ours);
        ours.set_nonblocking(true)?;
        let child = tokio::process::Command::new(exe)
            .env(HELPER_ENV, "1")
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("starting listener helper {}: {e}", exe.display()),
                )
            })?;
        tracing::info!(
            helper = index,
            pid = child.id(),
            "started a listener helper process"
        );
        let sock = Arc::new(tokio::net::UnixStream::from_std(ours)?);
        let (out, out_rx) = mpsc::unbounded_channel();
        let h = Arc::new(Self {
            index,
            out,
            next_id: AtomicU64::new(1),
            held: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
        });
        tokio::spawn(write_loop(sock.clone(), out_rx, child));
        tokio::spawn(read_loop(sock, Arc::downgrade(&h)));
        Ok(h)
    }

    async fn bind(self: &Arc<Self>, ip: Ipv4Addr, port: u16) -> std::io::Result<AdminListener> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        let (conn_tx, conns) = mpsc::unbounded_channel();
        lock(&self.pending).insert(id, tx);
        lock(&self.conns).insert(id, conn_tx);
        let gone = || std::io::Error::other(format!("listener helper {} exited", self.index));
        if self.dead.load(Ordering::SeqCst)
            || self.out.send(format!("bind {id} {ip} {port}")).is_err()
        {
            lock(&self.pending).remove(&id);
            lock(&self.conns).remove(&id);
            return Err(gone());
        }
        match rx.await {
            Ok(Ok(())) => Ok(AdminListener {
                inner: Inner::Remote {
                    helper: self.clone(),
                    id,
                    conns,
                },
            }),
            Ok(Err(e)) => {
                lock(&self.conns).remove(&id);
                Err(e)
            }
            Err(_) => {
                lock(&self.conns).remove(&id);
                Err(gone())
            }
        }
    }

    fn close(&self, id: u64) {
        lock(&self.conns).remove(&id);
        self.held.fetch_sub(1, Ordering::SeqCst);
        let _ = self.out.send(format!("close {id}"));
    }

    fn died(&self) {
        self.dead.store(true, Ordering::SeqCst);
        tracing::error!(
            helper = self.index,
            "a listener helper process exited; its admin ports are gone"
        );
        lock(&self.pending).clear();
        lock(&self.conns).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn write_loop(
    sock: Arc<tokio::net::UnixStream>,
    mut rx: mpsc::UnboundedReceiver<String>,
    mut child: tokio::process::Child,
) {
    while let Some(msg) = rx.recv().await {
        loop {
            if sock.writable().await.is_err() {
                return;
            }
            let sent = sock.try_io(Interest::WRITABLE, || {
                rustix::net::send(&*sock, msg.as_bytes(), rustix::net::SendFlags::NOSIGNAL)
                    .map_err(std::io::Error::from)
            });
            match sent {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => {
                    let _ = child.start_kill();
                    return;
                }
            }
        }
    }
    // The simulator is done with this helper (every sender dropped): end it.
    let _ = child.start_kill();
    let _ = child.wait().await;
}

async fn read_loop(sock: Arc<tokio::net::UnixStream>, helper: std::sync::Weak<Helper>) {
    let mut buf = [0u8; 256];
    loop {
        if sock.readable().await.is_err() {
            break;
        }
        let got = sock.try_io(Interest::READABLE, || recv_with_fd(&*sock, &mut buf));
        let (n, fd) = match got {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        };
        let Some(h) = helper.upgrade() else { return };
        if n == 0 {
            h.died();
            return;
        }
        let text = String::from_utf8_lossy(&buf[..n]);
        let mut words = text.split(' ');
        let kind = words.next().unwrap_or("");
        let Some(id) = words.next().and_then(|w| w.parse::<u64>().ok()) else {
            continue;
        };
        match kind {
            "bound" => {
                if let Some(tx) = lock(&h.pending).remove(&id) {
                    let _ = tx.send(Ok(()));
                }
            }
            "failed" => {
                let errno = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                if let Some(tx) = lock(&h.pending).remove(&id) {
                    let _ = tx.send(Err(std::io::Error::from_raw_os_error(errno)));
                }
            }
            "conn" => {
                // A connection to a port closed meanwhile is dropped, as a closed port
                // would refuse it.
                if let (Some(fd), Some(tx)) = (fd, lock(&h.conns).get(&id)) {
                    let _ = tx.send(std::net::TcpStream::from(fd));
                }
            }
            _ => {}
        }
    }
    if let Some(h) = helper.upgrade() {
        h.died();
    }
}

/// One packet and the descriptor it carries, if any.
fn recv_with_fd(sock: impl AsFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                fd.get_or_insert(f);
            }
        }
    }
    Ok((msg.bytes, fd))
}

/// Runs as a listener helper, and never returns, when started as one (see the module
/// docs); returns at once otherwise. Call it first thing in `main`.
pub fn serve_helper_if_asked() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let code = match serve_helper() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cluster-sim listener helper: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn serve_helper() -> anyhow::Result<()> {
    raise_nofile();
    let sock = rustix::io::dup(std::io::stdin().as_fd())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // Sends run on one thread, blocking: a packet is small and the simulator reads them
    // as they come.
    let (out, out_rx) = std::sync::mpsc::channel::<(String, Option<std::net::TcpStream>)>();
    let writer = rustix::io::dup(&sock)?;
    std::thread::spawn(move || {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        for (msg, stream) in out_rx {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            let fds;
            if let Some(s) = &stream {
                fds = [s.as_fd()];
                control.push(SendAncillaryMessage::ScmRights(&fds));
            }
            let iov = [IoSlice::new(msg.as_bytes())];
            if rustix::net::sendmsg(&writer, &iov, &mut control, SendFlags::NOSIGNAL).is_err() {
                std::process::exit(0);
            }
        }
    });
    let mut open: HashMap<u64, tokio::task::AbortHandle> = HashMap::new();
    let mut buf = [0u8; 256];
    loop {
        let n = rustix::net::recv(&sock, &mut buf[..], rustix::net::RecvFlags::empty())?.0;
        if n == 0 {
            // The simulator is gone.
            return Ok(());
        }
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let words: Vec<&str> = text.split(' ').collect();
        match words.as_slice() {
            ["bind", id, ip, port] => {
                let (Ok(id), Ok(ip), Ok(port)) = (
                    id.parse::<u64>(),
                    ip.parse::<Ipv4Addr>(),
                    port.parse::<u16>(),
                ) else {
                    continue;
                };
                let bound = std::net::TcpListener::bind((ip, port))
                    .and_then(|l| l.set_nonblocking(true).map(|_| l));
                match bound {
                    Ok(l) => {
                        let tx = out.clone();
                        let task = rt.spawn(async move {
                            let Ok(l) = tokio::net::TcpListener::from_std(l) else {
                                return;
                            };
                            loop {
                                let Ok((s, _)) = l.accept().await else {
                                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                                    continue;
                                };
                                let Ok(s) = s.into_std() else { continue };
                                if tx.send((format!("conn {id}"), Some(s))).is_err() {
                                    return;
                                }
                            }
                        });
                        open.insert(id, task.abort_handle());
                        let _ = out.send((format!("bound {id}"), None));
                    }
                    Err(e) => {
                        let errno = e.raw_os_error().unwrap_or(0);
                        let _ = out.send((format!("failed {id} {errno}"), None));
                    }
                }
            }
            ["close", id] => {
                if let Some(task) = id.parse::<u64>().ok().and_then(|id| open.remove(&id)) {
                    task.abort();
                }
            }
            _ => {}
        }
    }
}

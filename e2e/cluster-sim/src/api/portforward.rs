//! Pod port-forward over WebSocket, as kube-rs `Api::<Pod>::portforward` and the
//! `v4.channel.k8s.io` protocol speak it: channel `2i` carries port i's data, `2i+1` its
//! errors; the first frame on each channel is the port number (2 bytes, little endian).
//! The server TCP-connects to `status.podIP:port` and pipes.

use super::resources::resolve;
use super::status::{ApiError, ApiResult};
use super::{ApiState, Query, Target};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "portforward.k8s.io"];

pub fn handle(
    st: &Arc<ApiState>,
    target: &Target,
    query: &Query,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let mut plain = target.clone();
    plain.subresource = None;
    let t = resolve(st, &plain)?;
    let name = target.name.clone().unwrap_or_default();
    let pod = st
        .store
        .get(&t.key, target.namespace.as_deref(), &name)
        .ok_or_else(|| ApiError::not_found("pods", &name))?;
    let ports: Vec<u16> = query
        .get("ports")
        .map(|p| {
            p.split(',')
                .map(|x| x.trim().parse::<u16>())
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(format!(
                "invalid ports {:?}: expected a comma-separated list of port numbers",
                query.get("ports")
            ))
        })?
        .unwrap_or_default();
    if ports.is_empty() || ports.contains(&0) || ports.len() > 64 {
        return Err(ApiError::bad_request(
            "at least one port (1-65535) is required, as ?ports=8080,9090",
        ));
    }
    let ip: IpAddr = pod["status"]["podIP"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {name} has no IP (status.podIP is unset): it is not running"
            ))
        })?
        .parse()
        .map_err(|_| ApiError::internal(format!("pod {name} has an invalid status.podIP")))?;
    if !ip.is_loopback() {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("pod {name} has IP {ip}: the simulator forwards only to loopback addresses"),
        ));
    }
    // Tungstenite zero-fills its whole read buffer (128 KiB by default) before every read;
    // port-forwarded frames are at most 32 KiB, so a smaller buffer saves that work on each of
    // thousands of short probes.
    Ok(upgrade
        .protocols(PROTOCOLS)
        .read_buffer_size(32 * 1024)
        .on_upgrade(move |ws| forward(ws, ip, ports)))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

enum Out {
    Frame(Message),
    Eof,
}

async fn forward(ws: WebSocket, ip: IpAddr, ports: Vec<u16>) {
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Out>(64);
    let mut writers = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().enumerate() {
        let data_ch = (2 * i) as u8;
        let err_ch = data_ch + 1;
        let prefix = port.to_le_bytes();
        if sink.send(frame(data_ch, &prefix)).await.is_err()
            || sink.send(frame(err_ch, &prefix)).await.is_err()
        {
            return;
        }
        match TcpStream::connect(SocketAddr::new(ip, *port)).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                let (mut r, w) = tcp.into_split();
                writers.push(Some(w));
                let tx = out_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx
                                    .send(Out::Frame(frame(data_ch, &buf[..n])))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = tx.send(Out::Eof).await;
                });
            }
            Err(e) => {
                writers.push(None);
                let msg = format!("error forwarding port {port} to pod at {ip}: {e}");
                let tx = out_tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Out::Frame(frame(err_ch, msg.as_bytes()))).await;
                    let _ = tx.send(Out::Eof).await;
                });
            }
        }
    }
    drop(out_tx);
    let mut open = ports.len();
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(Out::Frame(m)) => {
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
                Some(Out::Eof) => {
                    open -= 1;
                    if open == 0 {
                        break;
                    }
                }
                None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) if b.len() > 1 => {
                    let ch = b[0] as usize;
                    if ch.is_multiple_of(2) {
                        if let Some(Some(w)) = writers.get_mut(ch / 2) {
                            if w.write_all(&b[1..]).await.is_err() {
                                writers[ch / 2] = None;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    for w in writers.iter_mut().flatten() {
        let _ = w.shutdown().await;
    }
}

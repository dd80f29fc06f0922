//! Watch: newline-delimited JSON events from a resourceVersion (or, without one, the current
//! state as ADDED events first), with bookmarks, `timeoutSeconds`, `410 Gone` as an ERROR
//! event for versions that are compacted away, and injected cuts. Each store event is
//! serialized once and shared by every watcher.

use super::resources::selectors;
use super::status::{ApiError, ApiResult};
use super::{ApiState, Query, Target};
use crate::store::{ResourceType, StoreError};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::SinkExt;
use http::header;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Default server-side watch timeout when the client sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

fn line(kind: &str, object: &serde_json::Value) -> Bytes {
    let mut buf = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    buf.push(b'\n');
    Bytes::from(buf)
}

pub fn serve(
    st: &Arc<ApiState>,
    t: &ResourceType,
    target: &Target,
    query: &Query,
    accept: &str,
) -> ApiResult<Response> {
    let (labels, fields) = selectors(query)?;
    // Streaming lists (`sendInitialEvents=true`): the current state as ADDED events, then a
    // bookmark annotated `k8s.io/initial-events-end`, then changes.
    let send_initial = query.get("sendInitialEvents").is_some_and(|b| b == "true");
    let as_table = super::table::wants_table(accept);
    let as_metadata = super::resources::wants_metadata(accept);
    let since = match query.get("resourceVersion").map(String::as_str) {
        _ if send_initial => None,
        None | Some("") | Some("0") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: {v:?}: must be a decimal integer"
            ))
        })?),
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let mut timeout =
        match query.get("timeoutSeconds").filter(|s| !s.is_empty()) {
            Some(s) => Duration::from_secs(s.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("timeoutSeconds: invalid value {s:?}"))
            })?),
            None => DEFAULT_TIMEOUT,
        };
    let (cut_events, cut_after) = st.faults.watch_limits();
    if let Some(c) = cut_after {
        timeout = timeout.min(c);
    }
    let (tx, rx_body) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let mut resp = Response::new(Body::from_stream(rx_body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );

    let subscription = st.store.watch(since);
    let (backlog, mut rx, mut last_rv, initial) = match subscription {
        Ok((backlog, rx)) => match since {
            Some(s) => (backlog, rx, s, Vec::new()),
            None => {
                let filter = |o: &serde_json::Value| {
                    labels.matches(&o["metadata"]["labels"]) && fields.matches(o)
                };
                let page = st.store.list_page(
                    &t.key,
                    target.namespace.as_deref(),
                    None,
                    None,
                    false,
                    &filter,
                );
                (Vec::new(), rx, page.resource_version, page.items)
            }
        },
        Err(StoreError::Gone { requested, oldest }) => {
            let status = ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {requested} ({oldest})"),
            )
            .to_status();
            let mut tx = tx;
            tokio::spawn(async move {
                let _ = tx.send(Ok(line("ERROR", &status))).await;
            });
            return Ok(resp);
        }
        Err(e) => return Err(e.into()),
    };
    let skip_until = last_rv;
    let initial_events_end = send_initial && bookmarks;
    let st = st.clone();
    let t = t.clone();
    let ns = target.namespace.clone();
    tokio::spawn(async move {
        let _guard = st.metrics.watch_opened();
        let mut tx = tx;
        let mut sent = 0usize;
        let limit = cut_events.unwrap_or(usize::MAX);
        let selected =
            |o: &serde_json::Value| labels.matches(&o["metadata"]["labels"]) && fields.matches(o);
        // What this watcher gets for an event, if anything. An object that starts or stops
        // matching the selectors is ADDED or DELETED for this watcher, as on a real server.
        let render = |ev: &crate::store::WatchEvent| -> Option<Bytes> {
            if ev.key != t.key || !(ns.is_none() || ev.namespace == ns) {
                return None;
            }
            let now = selected(&ev.object);
            let before = ev.previous.as_deref().map(selected);
            let kind = match (ev.kind, now, before) {
                ("MODIFIED", true, Some(false)) => "ADDED",
                ("MODIFIED", false, Some(true)) => "DELETED",
                (kind, true, _) => kind,
                _ => return None,
            };
            Some(if as_metadata {
                line(kind, &super::resources::partial_metadata(&ev.object))
            } else if as_table {
                // `kubectl get -w` asks for Table rows.
                let rv = ev.resource_version.to_string();
                line(
                    kind,
                    &super::table::render(&t, std::slice::from_ref(&ev.object), &rv, None),
                )
            } else if kind == ev.kind {
                // Everyone else shares the event encoded once.
                ev.wire_json()
            } else {
                line(kind, &ev.object)
            })
        };
        for obj in &initial {
            let msg = if as_metadata {
                line("ADDED", &super::resources::partial_metadata(obj))
            } else if as_table {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                line(
                    "ADDED",
                    &super::table::render(&t, std::slice::from_ref(obj), &rv, None),
                )
            } else {
                line("ADDED", obj)
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
            sent += 1;
            if sent >= limit {
                return;
            }
        }
        if initial_events_end {
            let end = json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": {
                "resourceVersion": last_rv.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"},
            }});
            if tx.send(Ok(line("BOOKMARK", &end))).await.is_err() {
                return;
            }
        }
        for ev in backlog {
            last_rv = last_rv.max(ev.resource_version);
            if let Some(msg) = render(&ev) {
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                sent += 1;
                if sent >= limit {
                    return;
                }
            }
        }
        let bookmark = |rv: u64| {
            line(
                "BOOKMARK",
                &json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": {"resourceVersion": rv.to_string()}}),
            )
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.resource_version <= skip_until {
                            continue;
                        }
                        last_rv = last_rv.max(ev.resource_version);
                        if let Some(msg) = render(&ev) {
                            if tx.send(Ok(msg)).await.is_err() {
                                return;
                            }
                            sent += 1;
                            if sent >= limit {
                                return;
                            }
                        }
                    }
                    // Too slow to keep up: end the stream; the client resumes from the last
                    // version it saw, which the history still holds.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                },
                _ = &mut deadline => {
                    if bookmarks {
                        let _ = tx.send(Ok(bookmark(last_rv))).await;
                    }
                    return;
                }
                _ = tick.tick() => {
                    if tx.is_closed() {
                        return;
                    }
                    if bookmarks && tx.send(Ok(bookmark(last_rv))).await.is_err() {
                        return;
                    }
                }
                _ = st.shutdown.cancelled() => return,
            }
        }
    });
    Ok(resp)
}

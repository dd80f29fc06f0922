//! The API server's own Prometheus metrics: requests by verb, resource, user agent and code,
//! open watches, and object counts per resource, so benchmarks can count exactly what a
//! client asked. Other parts of the simulator add their own lines through collectors.

use crate::store::Store;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Appends Prometheus text-format lines to the `/metrics` answer.
pub type Collector = Arc<dyn Fn(&mut String) + Send + Sync>;

type RequestKey = (String, String, String, u16);

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    open_watches: AtomicI64,
    collectors: Mutex<Vec<Collector>>,
}

/// The client's product name from its User-Agent (`kubectl/v1.32 (linux)...` -> `kubectl`).
pub fn user_agent_product(ua: &str) -> String {
    let product = ua.split(['/', ' ']).next().unwrap_or("").trim();
    if product.is_empty() {
        "unknown".to_string()
    } else {
        product
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
            .take(64)
            .collect()
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counts an open watch for as long as it lives.
pub struct WatchGuard(Arc<Metrics>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn record(&self, verb: &str, resource: &str, user_agent: &str, code: u16) {
        let key = (
            verb.to_string(),
            resource.to_string(),
            user_agent.to_string(),
            code,
        );
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    pub fn watch_opened(self: &Arc<Self>) -> WatchGuard {
        self.open_watches.fetch_add(1, Ordering::Relaxed);
        WatchGuard(self.clone())
    }

    pub fn open_watches(&self) -> i64 {
        self.open_watches.load(Ordering::Relaxed)
    }

    /// Requests counted so far that match `verb` and `resource`.
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((v, r, _, _), _)| v == verb && r == resource)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn add_collector(&self, c: Collector) {
        self.collectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
    }

    pub fn render(&self, store: &Store) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP cluster_sim_requests_total API requests answered, by verb, resource, client and HTTP code.\n");
        out.push_str("# TYPE cluster_sim_requests_total counter\n");
        for ((verb, resource, ua, code), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "cluster_sim_requests_total{{verb=\"{}\",resource=\"{}\",user_agent=\"{}\",code=\"{code}\"}} {n}",
                escape(verb),
                escape(resource),
                escape(ua)
            );
        }
        out.push_str("# HELP cluster_sim_open_watches Watch streams currently open.\n");
        out.push_str("# TYPE cluster_sim_open_watches gauge\n");
        let _ = writeln!(out, "cluster_sim_open_watches {}", self.open_watches());
        out.push_str("# HELP cluster_sim_objects Objects stored, by resource.\n");
        out.push_str("# TYPE cluster_sim_objects gauge\n");
        for t in store.resource_types() {
            let name = if t.key.group.is_empty() {
                t.key.plural.clone()
            } else {
                format!("{}.{}", t.key.plural, t.key.group)
            };
            let _ = writeln!(
                out,
                "cluster_sim_objects{{resource=\"{}\"}} {}",
                escape(&name),
                store.count(&t.key)
            );
        }
        out.push_str("# HELP cluster_sim_resource_version The store's current resourceVersion.\n");
        out.push_str("# TYPE cluster_sim_resource_version gauge\n");
        let _ = writeln!(
            out,
            "cluster_sim_resource_version {}",
            store.resource_version()
        );
        let collectors = self
            .collectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for c in collectors {
            c(&mut out);
        }
        out
    }
}

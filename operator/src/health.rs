//! Watch health: which watches have synced, which keep failing, and what `/ready` says.
//!
//! A watch that fails is retried by kube's watcher with its own backoff (at most 30 s
//! between attempts). One failure is harmless: the watcher resumes from the last version it
//! saw, or lists again. A watch whose failures have gone on for [`STALE_AFTER`] (about 50 s
//! after the first, given the watcher's backoff) is stale: `/ready`
//! turns false naming it, and the pod cache it feeds reports itself not synced, so that steps
//! read pods from the API server instead of deciding on an old view. It recovers at its next
//! event, or once no error came for longer than the watcher's longest backoff.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a watch may keep failing before its data counts as stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// A quiet period longer than the watcher's longest backoff (30 s, with jitter) ends a
/// streak of failures: the last retry succeeded.
pub const STREAK_GAP: Duration = Duration::from_secs(45);

/// Consecutive failures of one watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streak {
    pub first: Instant,
    pub last: Instant,
    pub error: String,
}

impl Streak {
    /// Records a failure at `now`, starting a new streak if the previous one ended.
    pub fn record(prev: Option<&Streak>, error: String, now: Instant) -> Streak {
        match prev {
            Some(s) if now.saturating_duration_since(s.last) < STREAK_GAP => Streak {
                first: s.first,
                last: now,
                error,
            },
            _ => Streak {
                first: now,
                last: now,
                error,
            },
        }
    }

    /// Whether the streak still runs at `now` and its failures have spanned long enough to
    /// make the data stale. (One failure long ago followed by silence is a retry that
    /// worked: the watcher would have reported the next failure within its backoff.)
    pub fn stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) < STREAK_GAP
            && self.last.saturating_duration_since(self.first) >= STALE_AFTER
    }
}

#[derive(Debug, Default)]
struct WatchState {
    resource: &'static str,
    synced: bool,
    failing: Option<Streak>,
}

/// Every watch the operator runs, by a key naming it (`pods in mesh linkerd`, ...).
#[derive(Clone, Default)]
pub struct Health {
    watches: Arc<Mutex<BTreeMap<String, WatchState>>>,
    errors: Family<Vec<(&'static str, String)>, Counter>,
}

impl Health {
    pub fn new(errors: Family<Vec<(&'static str, String)>, Counter>) -> Self {
        Self {
            watches: Arc::default(),
            errors,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, WatchState>) -> R) -> R {
        let mut w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut w)
    }

    /// A new watch, not synced yet.
    pub fn register(&self, key: &str, resource: &'static str) {
        self.with(|w| {
            w.insert(
                key.to_string(),
                WatchState {
                    resource,
                    ..Default::default()
                },
            )
        });
    }

    /// A watch that was stopped (its rotation no longer names its object).
    pub fn unregister(&self, key: &str) {
        self.with(|w| w.remove(key));
    }

    /// The watch delivered something: it works.
    pub fn ok(&self, key: &str) {
        self.with(|w| {
            if let Some(s) = w.get_mut(key) {
                s.failing = None;
            }
        });
    }

    /// The watch finished its (re)list.
    pub fn synced(&self, key: &str) {
        self.with(|w| {
            if let Some(s) = w.get_mut(key) {
                s.synced = true;
                s.failing = None;
            }
        });
    }

    /// The watch failed (counted in `trust_rotation_watch_errors_total{resource}`).
    pub fn error(&self, key: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        let resource = self.with(|w| {
            w.get_mut(key).map(|s| {
                s.failing = Some(Streak::record(s.failing.as_ref(), error.to_string(), now));
                s.resource
            })
        });
        if let Some(resource) = resource {
            self.errors
                .get_or_create(&vec![("resource", resource.to_string())])
                .inc();
        }
    }

    /// Whether the watch is synced and not stale.
    pub fn fresh(&self, key: &str) -> bool {
        let now = Instant::now();
        self.with(|w| {
            w.get(key)
                .is_some_and(|s| s.synced && !s.failing.as_ref().is_some_and(|f| f.stale(now)))
        })
    }

    /// `Ok` when every watch has synced and none is stale; else why not.
    pub fn ready(&self) -> Result<(), String> {
        let now = Instant::now();
        self.with(|w| {
            if w.is_empty() {
                return Err("no watch started yet".to_string());
            }
            let mut problems = Vec::new();
            for (key, s) in w.iter() {
                if let Some(f) = s.failing.as_ref().filter(|f| f.stale(now)) {
                    problems.push(format!(
                        "watch of {key} failing for {}s: {}",
                        now.saturating_duration_since(f.first).as_secs(),
                        f.error
                    ));
                } else if !s.synced {
                    problems.push(format!("watch of {key} not synced yet"));
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_stale_only_while_it_lasts_long_enough() {
        let t0 = Instant::now();
        let s = Streak::record(None, "e".into(), t0);
        assert!(!s.stale(t0));
        // The watcher backs off 0.8, 1.6, 3.2 ... 30 s: errors keep coming.
        let mut s = s;
        let mut t = t0;
        for gap in [1u64, 2, 4, 8, 16] {
            t += Duration::from_secs(gap);
            s = Streak::record(Some(&s), "e".into(), t);
        }
        assert_eq!(s.first, t0);
        assert!(s.stale(t), "failing for {:?}", t - t0);
        // No error for longer than the longest backoff: the last retry worked.
        assert!(!s.stale(t + STREAK_GAP));
        // A later failure starts a new streak.
        let later = Streak::record(Some(&s), "e".into(), t + STREAK_GAP);
        assert_eq!(later.first, t + STREAK_GAP);
        assert!(!later.stale(t + STREAK_GAP));
    }

    #[test]
    fn ready_needs_every_watch_synced_and_none_stale() {
        let errors = Family::default();
        let h = Health::new(errors.clone());
        assert!(h.ready().is_err());
        h.register("pods in mesh linkerd", "pods");
        h.register("TrustAnchorRotations", "trustanchorrotations");
        let e = h.ready().unwrap_err();
        assert!(e.contains("pods in mesh linkerd not synced"), "{e}");
        h.synced("pods in mesh linkerd");
        h.synced("TrustAnchorRotations");
        assert_eq!(h.ready(), Ok(()));
        assert!(h.fresh("pods in mesh linkerd"));
        // A failure is counted at once but is not staleness yet.
        h.error("pods in mesh linkerd", &"connection refused");
        assert_eq!(h.ready(), Ok(()));
        assert_eq!(
            errors
                .get_or_create(&vec![("resource", "pods".to_string())])
                .get(),
            1
        );
        // A streak that started STALE_AFTER ago and still runs.
        h.with(|w| {
            let s = w.get_mut("pods in mesh linkerd").unwrap();
            let f = s.failing.as_mut().unwrap();
            f.first = Instant::now() - STALE_AFTER - Duration::from_secs(1);
        });
        let e = h.ready().unwrap_err();
        assert!(
            e.contains("pods in mesh linkerd failing for") && e.contains("connection refused"),
            "{e}"
        );
        assert!(!h.fresh("pods in mesh linkerd"));
        // The next event clears it.
        h.ok("pods in mesh linkerd");
        assert_eq!(h.ready(), Ok(()));
        h.unregister("pods in mesh linkerd");
        assert!(!h.fresh("pods in mesh linkerd"));
    }
}

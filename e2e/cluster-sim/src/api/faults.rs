//! Fault injection, deterministic from a seed: added latency, error answers (500/503/429 with
//! `Retry-After`) per verb and resource, watch streams cut after N events or T seconds, and
//! injected update conflicts. Decisions draw from one seeded generator in request order, so
//! the same seed and the same sequence of requests give the same faults.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// One error rule: requests matching `verb` and `resource` (None = any) fail with `code`
/// with probability `rate` (0.0..=1.0). The verb `write` stands for every verb that changes
/// something (create, update, patch, delete, deletecollection).
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorRule {
    pub verb: Option<String>,
    pub resource: Option<String>,
    /// Only requests from this client (the product of its `User-Agent`, e.g.
    /// `trust-rotation-operator`); None = every client.
    pub client: Option<String>,
    pub code: u16,
    pub rate: f64,
    /// `Retry-After` seconds on 429/503 answers (default 1).
    pub retry_after: u64,
}

impl ErrorRule {
    /// Parses `VERB:RESOURCE:CODE:RATE[:RETRY_AFTER]`, `*` for any verb or resource, e.g.
    /// `list:pods:503:0.2`, `*:configmaps:429:0.5:2` or `write:*:500:0.1`. The rule applies
    /// to every client; narrow it with [`ErrorRule::for_client`].
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if !(4..=5).contains(&parts.len()) {
            return Err(format!("fault rule {s:?}: expected VERB:RESOURCE:CODE:RATE[:RETRY_AFTER], e.g. list:pods:503:0.2"));
        }
        let any = |p: &str| (p != "*" && !p.is_empty()).then(|| p.to_string());
        let code: u16 = parts[2]
            .parse()
            .map_err(|_| format!("fault rule {s:?}: code {:?} is not a number", parts[2]))?;
        if !matches!(code, 409 | 429 | 500 | 503 | 504) {
            return Err(format!(
                "fault rule {s:?}: code {code} is not one of 409, 429, 500, 503, 504"
            ));
        }
        let rate: f64 = parts[3]
            .parse()
            .map_err(|_| format!("fault rule {s:?}: rate {:?} is not a number", parts[3]))?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!(
                "fault rule {s:?}: rate {rate} is not between 0 and 1"
            ));
        }
        let retry_after = match parts.get(4) {
            Some(r) => r.parse().map_err(|_| {
                format!("fault rule {s:?}: Retry-After {r:?} is not a number of seconds")
            })?,
            None => 1,
        };
        Ok(Self {
            verb: any(parts[0]),
            resource: any(parts[1]),
            client: None,
            code,
            rate,
            retry_after,
        })
    }

    /// The same rule, for requests of one client only (its `User-Agent` product).
    pub fn for_client(mut self, product: &str) -> Self {
        self.client = Some(product.to_string());
        self
    }

    fn matches(&self, verb: &str, resource: &str, client: &str) -> bool {
        let verb_ok = match self.verb.as_deref() {
            None => true,
            Some("write") => matches!(
                verb,
                "create" | "update" | "patch" | "delete" | "deletecollection"
            ),
            Some(v) => v == verb,
        };
        verb_ok
            && self.resource.as_deref().is_none_or(|r| r == resource)
            && self.client.as_deref().is_none_or(|c| c == client)
    }
}

/// What to inject. `Default` injects nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Added to every API request (not to `/metrics`, `/healthz`).
    pub latency: Duration,
    /// Error answers per verb and resource.
    pub errors: Vec<ErrorRule>,
    /// Watches end (cleanly, as a server-side timeout would) after this many events.
    pub watch_cut_after_events: Option<usize>,
    /// Watches end after this long.
    pub watch_cut_after: Option<Duration>,
    /// Fraction of updates and patches answered `409 Conflict`.
    pub conflict_rate: f64,
}

/// SplitMix64: small, fast, and deterministic from its seed.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The live fault settings of a server; change them at any time with [`Faults::set`].
#[derive(Clone)]
pub struct Faults {
    config: Arc<RwLock<FaultConfig>>,
    rng: Arc<Mutex<Rng>>,
}

/// A decision for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Injected {
    Error { code: u16, retry_after: u64 },
}

impl Faults {
    pub fn new(config: FaultConfig, seed: u64) -> Self {
        Self {
            config: Arc::new(RwLock::new(config)),
            rng: Arc::new(Mutex::new(Rng(seed))),
        }
    }

    pub fn set(&self, config: FaultConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    pub fn get(&self) -> FaultConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn roll(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        if rate >= 1.0 {
            return true;
        }
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_f64()
            < rate
    }

    pub fn latency(&self) -> Duration {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .latency
    }

    /// Whether this request of `client` (its `User-Agent` product) should fail, and how.
    pub fn error_for(&self, verb: &str, resource: &str, client: &str) -> Option<Injected> {
        let rules = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .errors
            .clone();
        for r in rules {
            if r.matches(verb, resource, client) && self.roll(r.rate) {
                return Some(Injected::Error {
                    code: r.code,
                    retry_after: r.retry_after,
                });
            }
        }
        None
    }

    pub fn conflict(&self) -> bool {
        let rate = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .conflict_rate;
        self.roll(rate)
    }

    pub fn watch_limits(&self) -> (Option<usize>, Option<Duration>) {
        let c = self.config.read().unwrap_or_else(|e| e.into_inner());
        (c.watch_cut_after_events, c.watch_cut_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_decisions() {
        let cfg = FaultConfig {
            errors: vec![ErrorRule::parse("list:pods:503:0.5").unwrap_or_else(|e| panic!("{e}"))],
            ..Default::default()
        };
        let a = Faults::new(cfg.clone(), 7);
        let b = Faults::new(cfg, 7);
        let da: Vec<_> = (0..64)
            .map(|_| a.error_for("list", "pods", "kubectl").is_some())
            .collect();
        let db: Vec<_> = (0..64)
            .map(|_| b.error_for("list", "pods", "kubectl").is_some())
            .collect();
        assert_eq!(da, db);
        assert!(
            da.iter().any(|x| *x) && da.iter().any(|x| !*x),
            "a 50% rate fails some and not all"
        );
        assert_eq!(
            a.error_for("get", "pods", "kubectl"),
            None,
            "other verbs are untouched"
        );
    }

    #[test]
    fn write_rules_for_one_client_spare_reads_and_other_clients() {
        let rule = ErrorRule::parse("write:*:500:1")
            .unwrap_or_else(|e| panic!("{e}"))
            .for_client("trust-rotation-operator");
        let f = Faults::new(
            FaultConfig {
                errors: vec![rule],
                ..Default::default()
            },
            1,
        );
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            assert!(
                f.error_for(verb, "secrets", "trust-rotation-operator")
                    .is_some(),
                "{verb} is a write"
            );
            assert_eq!(f.error_for(verb, "secrets", "kubectl"), None, "{verb}");
        }
        for verb in ["get", "list", "watch"] {
            assert_eq!(
                f.error_for(verb, "secrets", "trust-rotation-operator"),
                None,
                "{verb} is a read"
            );
        }
    }

    #[test]
    fn rule_parsing_rejects_nonsense() {
        assert!(ErrorRule::parse("list:pods:503").is_err());
        assert!(ErrorRule::parse("list:pods:200:0.1").is_err());
        assert!(ErrorRule::parse("list:pods:503:2").is_err());
        let r = ErrorRule::parse("*:configmaps:429:1:3").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (r.verb, r.resource.as_deref(), r.retry_after),
            (None, Some("configmaps"), 3)
        );
    }
}

//! What every replica exports, leader or not: whether it leads, its watches' failures, and
//! its own process. The rotation's metrics (`trust_rotation_phase` and the rest, in
//! `trust-rotation-steps`) live in a second registry that only the leader exports, so a
//! standby never reports a phase it is not driving.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether this replica leads now.
pub type Leading = Arc<dyn Fn() -> bool + Send + Sync>;

/// `trust_rotation_watch_errors_total{resource}`.
pub type WatchErrors = Family<Vec<(&'static str, String)>, Counter>;

/// Registers the per-replica metrics; returns the watch-error counter the watches feed.
pub fn register(registry: &mut Registry, leading: Leading) -> WatchErrors {
    let errors = WatchErrors::default();
    registry.register(
        "trust_rotation_watch_errors",
        "Failed watch attempts by resource (each is retried with backoff; a watch failing for 30s turns /ready false)",
        errors.clone(),
    );
    registry.register_collector(Box::new(LeaderCollector { leading }));
    registry.register_collector(Box::new(ProcessCollector::new()));
    errors
}

/// `trust_rotation_leader`: 1 while this replica holds the leadership Lease.
struct LeaderCollector {
    leading: Leading,
}

impl std::fmt::Debug for LeaderCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaderCollector")
    }
}

impl Collector for LeaderCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(i64::from((self.leading)()));
        let m = encoder.encode_descriptor(
            "trust_rotation_leader",
            "1 while this replica holds the leadership Lease and may write, else 0",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(m)
    }
}

/// The process's CPU, memory and file descriptors (Linux `/proc/self`; on other systems only
/// the start time), under the names Prometheus client libraries use.
#[derive(Debug)]
struct ProcessCollector {
    start: f64,
}

impl ProcessCollector {
    fn new() -> Self {
        Self {
            start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        }
    }
}

/// Process figures read from `/proc/self`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub open_fds: f64,
}

/// Parses `/proc/self/stat` (utime and stime, fields 14 and 15, in clock ticks of 1/100 s,
/// Linux's `USER_HZ`) and the `VmRSS` line of `/proc/self/status`.
pub fn parse_proc(stat: &str, status: &str) -> Option<(f64, f64)> {
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(((utime + stime) / 100.0, rss_kib * 1024.0))
}

fn read_proc() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let (cpu_seconds, resident_bytes) = parse_proc(&stat, &status)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    Some(ProcessStats {
        cpu_seconds,
        resident_bytes,
        open_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let start = ConstGauge::new(self.start);
        let m = encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            None,
            start.metric_type(),
        )?;
        start.encode(m)?;
        let Some(p) = read_proc() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        let m = encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent by the process, in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(m)?;
        let rss = ConstGauge::new(p.resident_bytes);
        let m = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory of the process, in bytes",
            None,
            rss.metric_type(),
        )?;
        rss.encode(m)?;
        let fds = ConstGauge::new(p.open_fds);
        let m = encoder.encode_descriptor(
            "process_open_fds",
            "Open file descriptors of the process",
            None,
            fds.metric_type(),
        )?;
        fds.encode(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn parses_proc_even_with_spaces_in_the_command_name() {
        let stat = "4242 (trust rotation) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 150 0 0 20 0 8 0 100 0 0";
        let status = "Name:\ttrust\nVmRSS:\t   65536 kB\nThreads:\t8\n";
        assert_eq!(parse_proc(stat, status), Some((4.0, 65536.0 * 1024.0)));
        assert_eq!(parse_proc("garbage", status), None);
    }

    #[test]
    fn every_replica_exports_leadership_and_its_process() {
        let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut registry = Registry::default();
        let flag = leading.clone();
        let errors = register(
            &mut registry,
            Arc::new(move || flag.load(std::sync::atomic::Ordering::SeqCst)),
        );
        errors
            .get_or_create(&vec![("resource", "pods".to_string())])
            .inc();
        let render = |r: &Registry| {
            let mut s = String::new();
            encode(&mut s, r).unwrap();
            s
        };
        let text = render(&registry);
        assert!(text.contains("trust_rotation_leader 0\n"), "{text}");
        assert!(
            text.contains("trust_rotation_watch_errors_total{resource=\"pods\"} 1"),
            "{text}"
        );
        assert!(text.contains("process_start_time_seconds "), "{text}");
        if cfg!(target_os = "linux") {
            for m in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
            ] {
                assert!(text.contains(m), "{m} in {text}");
            }
        }
        leading.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(render(&registry).contains("trust_rotation_leader 1\n"));
    }
}

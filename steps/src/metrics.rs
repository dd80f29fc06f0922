//! The operator's Prometheus metrics. The names of the first group are the user guide's
//! contract; the step and expiry metrics are ours.

use crate::step::Progress;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use trust_rotation_crds::{
    parse_proxy_duration, ApprovalGate, Phase, TrustAnchorRotationStatus, WorkloadRestartState,
};

type Labels = Vec<(&'static str, String)>;

/// Every metric the rotation runner publishes.
#[derive(Clone, Debug)]
pub struct Metrics {
    phase: Family<Labels, Gauge>,
    bundle_converged: Gauge,
    bundle_target: Gauge,
    certs_converged: Gauge,
    certs_target: Gauge,
    active_issuer: Family<Labels, Gauge>,
    previous_anchor: Family<Labels, Gauge>,
    refresh_interval: Gauge<f64, AtomicU64>,
    blocked: Gauge,
    anchor_expiry: Gauge<f64, AtomicU64>,
    issuer_expiry: Gauge<f64, AtomicU64>,
    step_duration: Family<Labels, Histogram>,
    step_executions: Family<Labels, Counter>,
    step_errors: Family<Labels, Counter>,
    rotations_started: Counter,
    rotations_finished: Counter,
    rotations_retargeted: Counter,
    approvals_pending: Family<Labels, Gauge>,
    workloads_restarted: Gauge,
    workloads_pending: Gauge,
    workloads_skipped: Gauge,
    window_open: Gauge,
    window_next_open: Gauge<f64, AtomicU64>,
}

fn step_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (names without prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            phase: Family::default(),
            bundle_converged: Gauge::default(),
            bundle_target: Gauge::default(),
            certs_converged: Gauge::default(),
            certs_target: Gauge::default(),
            active_issuer: Family::default(),
            previous_anchor: Family::default(),
            refresh_interval: Gauge::default(),
            blocked: Gauge::default(),
            anchor_expiry: Gauge::default(),
            issuer_expiry: Gauge::default(),
            step_duration: Family::new_with_constructor(step_histogram),
            step_executions: Family::default(),
            step_errors: Family::default(),
            rotations_started: Counter::default(),
            rotations_finished: Counter::default(),
            rotations_retargeted: Counter::default(),
            approvals_pending: Family::default(),
            workloads_restarted: Gauge::default(),
            workloads_pending: Gauge::default(),
            workloads_skipped: Gauge::default(),
            window_open: Gauge::default(),
            window_next_open: Gauge::default(),
        };
        registry.register(
            "trust_rotation_phase",
            "1 for the rotation's current phase, 0 for every other phase",
            m.phase.clone(),
        );
        registry.register(
            "trust_rotation_trust_bundle_converged_pods",
            "Meshed pods outside the control plane that carry the current trust bundle",
            m.bundle_converged.clone(),
        );
        registry.register(
            "trust_rotation_trust_bundle_target_pods",
            "Meshed pods outside the control plane that must carry the current trust bundle",
            m.bundle_target.clone(),
        );
        registry.register(
            "trust_rotation_workload_certificates_converged_pods",
            "Meshed pods whose live workload certificate chains to the active issuer",
            m.certs_converged.clone(),
        );
        registry.register(
            "trust_rotation_workload_certificates_target_pods",
            "Meshed pods whose live workload certificate must chain to the active issuer",
            m.certs_target.clone(),
        );
        registry.register(
            "trust_rotation_active_issuer_info",
            "Fingerprint (SHA-256 of the DER) of the active identity issuer",
            m.active_issuer.clone(),
        );
        registry.register(
            "trust_rotation_previous_anchor_info",
            "Fingerprint (SHA-256 of the DER) of the anchor in the previous-anchor Secret",
            m.previous_anchor.clone(),
        );
        registry.register(
            "trust_rotation_workload_certificate_refresh_interval_seconds",
            "Accelerated workload-certificate refresh interval published to the data plane; 0 when no override is in effect",
            m.refresh_interval.clone(),
        );
        registry.register(
            "trust_rotation_approvals_pending",
            "1 while the rotation waits for `linkerd trust approve <step>` (spec.automation.approvals), per step; else 0",
            m.approvals_pending.clone(),
        );
        registry.register(
            "trust_rotation_workloads_restarted",
            "Workload restarts the operator made in the latest rotation (spec.automation.workloadRestarts: Automatic; one per workload and step)",
            m.workloads_restarted.clone(),
        );
        registry.register(
            "trust_rotation_workloads_pending",
            "Workloads whose pods hold the rotation and wait for the operator to restart them",
            m.workloads_pending.clone(),
        );
        registry.register(
            "trust_rotation_workloads_skipped",
            "Workloads the operator did not restart in the latest rotation (a PodDisruptionBudget allowing no disruption, linkerd trust skip, OnDelete)",
            m.workloads_skipped.clone(),
        );
        registry.register(
            "trust_rotation_blocked",
            "1 while .status.blockingMessage says the rotation cannot proceed (blocked, stalled or failing), else 0; 0 while it is parked outside the maintenance windows (trust_rotation_maintenance_window_open says so)",
            m.blocked.clone(),
        );
        registry.register(
            "trust_rotation_maintenance_window_open",
            "1 while the operator may take disruptive actions (inside a maintenance window of spec.automation.schedule, or none configured), else 0",
            m.window_open.clone(),
        );
        registry.register(
            "trust_rotation_maintenance_window_next_open_timestamp_seconds",
            "When the next maintenance window opens (Unix seconds; while one is open, the one after it); 0 when no window is configured",
            m.window_next_open.clone(),
        );
        registry.register(
            "trust_rotation_trust_anchor_expiry_timestamp_seconds",
            "When the current trust anchor expires (Unix seconds)",
            m.anchor_expiry.clone(),
        );
        registry.register(
            "trust_rotation_identity_issuer_expiry_timestamp_seconds",
            "When the active identity issuer expires (Unix seconds)",
            m.issuer_expiry.clone(),
        );
        registry.register(
            "trust_rotation_step_duration_seconds",
            "Duration of one execution of a rotation step",
            m.step_duration.clone(),
        );
        registry.register(
            "trust_rotation_step_executions",
            "Executions of rotation steps by outcome (done, wait, blocked, error)",
            m.step_executions.clone(),
        );
        registry.register(
            "trust_rotation_step_errors",
            "Failed executions of rotation steps by error category",
            m.step_errors.clone(),
        );
        registry.register(
            "trust_rotation_rotations_started",
            "Rotations started by this operator process",
            m.rotations_started.clone(),
        );
        registry.register(
            "trust_rotation_rotations_finished",
            "Rotations finished by this operator process",
            m.rotations_finished.clone(),
        );
        registry.register(
            "trust_rotation_rotations_retargeted",
            "Rotations in progress moved to a newer target (the trust anchor renewed again mid-rotation) by this operator process",
            m.rotations_retargeted.clone(),
        );
        for p in Phase::ALL {
            m.phase
                .get_or_create(&vec![("phase", p.as_str().to_string())])
                .set(0);
        }
        // No window configured until a reconcile says otherwise: the operator may act.
        m.window_open.set(1);
        for g in ApprovalGate::ALL {
            m.approvals_pending
                .get_or_create(&vec![("step", g.as_str().to_string())])
                .set(0);
        }
        m
    }

    /// The maintenance windows' state (`spec.automation.schedule.maintenanceWindows`).
    pub fn observe_window(&self, window: &crate::schedule::WindowState) {
        self.window_open.set(i64::from(window.is_open()));
        self.window_next_open
            .set(window.next_opening().map_or(0.0, |t| t.as_second() as f64));
    }

    /// Makes the gauges mirror `status`.
    pub fn observe_status(&self, status: &TrustAnchorRotationStatus) {
        let current = status.phase.unwrap_or(Phase::Synced);
        for p in Phase::ALL {
            self.phase
                .get_or_create(&vec![("phase", p.as_str().to_string())])
                .set(i64::from(p == current));
        }
        let (bc, bt) = status
            .trust_bundle
            .as_ref()
            .map(|c| (c.converged, c.target))
            .unwrap_or_default();
        self.bundle_converged.set(i64::from(bc));
        self.bundle_target.set(i64::from(bt));
        let (cc, ct) = status
            .workload_certificates
            .as_ref()
            .map(|c| (c.converged, c.target))
            .unwrap_or_default();
        self.certs_converged.set(i64::from(cc));
        self.certs_target.set(i64::from(ct));
        set_info(
            &self.active_issuer,
            status
                .active_issuer
                .as_ref()
                .map(|c| c.fingerprint.as_str()),
        );
        set_info(
            &self.previous_anchor,
            status
                .previous_anchor
                .as_ref()
                .map(|c| c.fingerprint.as_str()),
        );
        let interval = status
            .workload_certificate_refresh_interval
            .as_deref()
            .and_then(|v| parse_proxy_duration(v).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.refresh_interval.set(interval);
        self.blocked.set(i64::from(
            status
                .blocking_message
                .as_deref()
                .is_some_and(|m| !m.starts_with(crate::schedule::OUTSIDE_WINDOWS)),
        ));
        for gate in ApprovalGate::ALL {
            let pending = status.blocking_message.as_deref().is_some_and(|m| {
                m.strip_prefix("awaiting approval: ")
                    .is_some_and(|rest| rest.starts_with(gate.as_str()))
            });
            self.approvals_pending
                .get_or_create(&vec![("step", gate.as_str().to_string())])
                .set(i64::from(pending));
        }
        let expiry = |c: &Option<trust_rotation_crds::CertificateSummary>| {
            c.as_ref()
                .and_then(|c| c.not_after.as_ref())
                .map(|t| t.0.as_second() as f64)
                .unwrap_or(0.0)
        };
        let count = |s: WorkloadRestartState| {
            status
                .workload_restarts
                .iter()
                .filter(|r| r.state == s)
                .count() as i64
        };
        self.workloads_restarted
            .set(count(WorkloadRestartState::Restarting) + count(WorkloadRestartState::Restarted));
        self.workloads_pending
            .set(count(WorkloadRestartState::Pending));
        self.workloads_skipped
            .set(count(WorkloadRestartState::Skipped));
        self.anchor_expiry.set(expiry(&status.active_anchor));
        self.issuer_expiry.set(expiry(&status.active_issuer));
    }

    /// Records one step execution.
    pub fn observe_step(&self, step: &str, outcome: &'static str, took: Duration) {
        let labels = vec![("step", step.to_string()), ("outcome", outcome.to_string())];
        self.step_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.step_executions.get_or_create(&labels).inc();
    }

    /// Records a failed step execution.
    pub fn observe_error(&self, step: &str, category: &'static str) {
        self.step_errors
            .get_or_create(&vec![
                ("step", step.to_string()),
                ("category", category.to_string()),
            ])
            .inc();
    }

    pub fn rotation_started(&self) {
        self.rotations_started.inc();
    }

    pub fn rotation_finished(&self) {
        self.rotations_finished.inc();
    }

    pub fn rotation_retargeted(&self) {
        self.rotations_retargeted.inc();
    }

    /// Applies a step's report without waiting for the next status write.
    pub fn observe_progress(&self, progress: &Progress) {
        if let Some(c) = &progress.trust_bundle {
            self.bundle_converged.set(i64::from(c.converged));
            self.bundle_target.set(i64::from(c.target));
        }
        if let Some(c) = &progress.workload_certificates {
            self.certs_converged.set(i64::from(c.converged));
            self.certs_target.set(i64::from(c.target));
        }
    }
}

fn set_info(family: &Family<Labels, Gauge>, fingerprint: Option<&str>) {
    let wanted = fingerprint.map(|f| vec![("fingerprint", f.to_string())]);
    family.clear();
    if let Some(labels) = wanted {
        family.get_or_create(&labels).set(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use trust_rotation_crds::{CertificateSummary, Convergence};

    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn exposes_the_guides_metric_names_and_values() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let status = TrustAnchorRotationStatus {
            phase: Some(Phase::PropagatingTrustRoots),
            trust_bundle: Some(Convergence::new(3, 5, vec![], None)),
            active_issuer: Some(CertificateSummary {
                fingerprint: "ab12".into(),
                subject: None,
                not_after: None,
            }),
            previous_anchor: Some(CertificateSummary {
                fingerprint: "cd34".into(),
                subject: None,
                not_after: None,
            }),
            workload_certificate_refresh_interval: Some("5m".into()),
            ..Default::default()
        };
        m.observe_status(&status);
        let text = render(&registry);
        for line in [
            "trust_rotation_phase{phase=\"PropagatingTrustRoots\"} 1",
            "trust_rotation_phase{phase=\"Synced\"} 0",
            "trust_rotation_trust_bundle_converged_pods 3",
            "trust_rotation_trust_bundle_target_pods 5",
            "trust_rotation_workload_certificates_converged_pods 0",
            "trust_rotation_workload_certificates_target_pods 0",
            "trust_rotation_active_issuer_info{fingerprint=\"ab12\"} 1",
            "trust_rotation_previous_anchor_info{fingerprint=\"cd34\"} 1",
            "trust_rotation_workload_certificate_refresh_interval_seconds 300.0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // A new issuer replaces the old fingerprint rather than adding a second series.
        let mut next = status.clone();
        next.active_issuer.as_mut().unwrap().fingerprint = "ef56".into();
        next.workload_certificate_refresh_interval = None;
        m.observe_status(&next);
        let text = render(&registry);
        assert!(!text.contains("fingerprint=\"ab12\""));
        assert!(text.contains("trust_rotation_active_issuer_info{fingerprint=\"ef56\"} 1"));
        assert!(text.contains("trust_rotation_workload_certificate_refresh_interval_seconds 0.0"));
    }

    #[test]
    fn workload_restart_gauges_count_the_status_records() {
        use trust_rotation_crds::WorkloadRestartRecord;
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let rec = |w: &str, state| WorkloadRestartRecord {
            rotation_id: "r".into(),
            step: "AwaitPropagation".into(),
            workload: w.into(),
            state,
            at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            message: None,
        };
        m.observe_status(&TrustAnchorRotationStatus {
            workload_restarts: vec![
                rec("a/deployment/x", WorkloadRestartState::Restarted),
                rec("a/deployment/y", WorkloadRestartState::Restarting),
                rec("a/statefulset/z", WorkloadRestartState::Skipped),
                rec("a/daemonset/d", WorkloadRestartState::Pending),
                rec("a/daemonset/e", WorkloadRestartState::Pending),
            ],
            ..Default::default()
        });
        let text = render(&registry);
        assert!(
            text.contains("trust_rotation_workloads_restarted 2"),
            "{text}"
        );
        assert!(
            text.contains("trust_rotation_workloads_pending 2"),
            "{text}"
        );
        assert!(
            text.contains("trust_rotation_workloads_skipped 1"),
            "{text}"
        );
    }

    #[test]
    fn approvals_pending_follow_the_blocking_message() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let text = render(&registry);
        assert!(text.contains("trust_rotation_approvals_pending{step=\"IssuerRenewal\"} 0"));
        m.observe_status(&TrustAnchorRotationStatus {
            blocking_message: Some("awaiting approval: RootRemoval (...)".into()),
            ..Default::default()
        });
        let text = render(&registry);
        assert!(
            text.contains("trust_rotation_approvals_pending{step=\"RootRemoval\"} 1"),
            "{text}"
        );
        assert!(text.contains("trust_rotation_approvals_pending{step=\"IssuerRenewal\"} 0"));
        m.observe_status(&TrustAnchorRotationStatus::default());
        assert!(
            render(&registry).contains("trust_rotation_approvals_pending{step=\"RootRemoval\"} 0")
        );
    }

    #[test]
    fn the_window_gauges_and_a_window_park_is_not_blocked() {
        use crate::schedule::WindowState;
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let text = render(&registry);
        assert!(
            text.contains("trust_rotation_maintenance_window_open 1"),
            "{text}"
        );
        let opens = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let closed = WindowState::Closed {
            opens_at: opens,
            local: "Tue 2027-01-12 08:00 UTC".into(),
        };
        m.observe_window(&closed);
        m.observe_status(&TrustAnchorRotationStatus {
            blocking_message: closed.park(),
            ..Default::default()
        });
        let text = render(&registry);
        assert!(
            text.contains("trust_rotation_maintenance_window_open 0")
                && text.contains(
                    "trust_rotation_maintenance_window_next_open_timestamp_seconds 1800000000"
                )
                && text.contains("trust_rotation_blocked 0"),
            "{text}"
        );
        m.observe_window(&WindowState::Always);
        let text = render(&registry);
        assert!(
            text.contains("trust_rotation_maintenance_window_open 1")
                && text.contains("trust_rotation_maintenance_window_next_open_timestamp_seconds 0"),
            "{text}"
        );
    }
}

//! AccelerateRefresh: publishes the accelerated workload-certificate refresh interval, waits
//! until every workload pod's live certificate chains to the active issuer (proven by TLS
//! probes of each proxy's admin port), then clears the interval.
//!
//! The optional built-in consumer of the interval (`spec.manageProxyRefreshEnv`) sets
//! `config.linkerd.io/proxy-additional-env` on meshed namespaces during propagation (pods
//! restarted then renew quickly once the issuer rotates) and removes exactly what it added.

use super::bundle::describe;
use super::invariant::Guarded;
use super::propagation::{restart_commands, stuck_terminating_block};
use super::{names, POLL};
use crate::convergence::{cert_convergence, cert_state, CertState, Tally};
use crate::observe::MeshedPod;
use crate::probe_cache::{look, Backoff, ProbeCache};
use crate::runner::telemetry::TracedWrite as _;
use crate::runner::FIELD_MANAGER;
use crate::snapshot::gone_if_stalled;
use crate::step::{ErrorCategory, Outcome, Progress, Step, StepContext, StepError, StepReport};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use trust_rotation_crds::{Phase, MAX_REFRESH_ENV, PROXY_ADDITIONAL_ENV_ANNOTATION};

/// Marks a namespace whose `proxy-additional-env` entry the operator added. Its value says
/// whether the operator also created the annotation (so it removes the annotation itself only
/// then).
pub const MANAGED_ENV_ANNOTATION: &str = "trust.linkerd.io/managed-proxy-env";

/// A namespace's relevant annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceEnv {
    pub additional_env: Option<String>,
    pub marker: Option<String>,
}

/// The annotation values to write (`None` removes the annotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPatch {
    pub additional_env: Option<String>,
    pub marker: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Marker {
    env: String,
    value: String,
    created_annotation: bool,
}

fn parse_env_list(text: &str) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match v {
        Value::Array(items) => Ok(items),
        _ => Err("not a JSON list of EnvVar".into()),
    }
}

fn names_env(v: &Value, name: &str) -> bool {
    v.get("name").and_then(Value::as_str) == Some(name)
}

/// Adds `LINKERD2_PROXY_IDENTITY_MAX_REFRESH=<interval>` unless the namespace already sets it
/// (ours or someone else's) or its annotation is not a JSON list (left alone). `None`: nothing
/// to write.
pub fn add_env(ns: &NamespaceEnv, interval: &str) -> Option<EnvPatch> {
    if ns.marker.is_some() {
        return None;
    }
    let mut list = match ns.additional_env.as_deref() {
        None => Vec::new(),
        Some(text) => parse_env_list(text).ok()?,
    };
    if list.iter().any(|v| names_env(v, MAX_REFRESH_ENV)) {
        return None; // the user's own setting wins
    }
    list.push(json!({"name": MAX_REFRESH_ENV, "value": interval}));
    let marker = Marker {
        env: MAX_REFRESH_ENV.into(),
        value: interval.into(),
        created_annotation: ns.additional_env.is_none(),
    };
    Some(EnvPatch {
        additional_env: Some(Value::Array(list).to_string()),
        marker: serde_json::to_string(&marker).ok(),
    })
}

/// Removes only what [`add_env`] added. `None`: nothing to write.
pub fn remove_env(ns: &NamespaceEnv) -> Option<EnvPatch> {
    let marker_text = ns.marker.as_deref()?;
    let marker: Option<Marker> = serde_json::from_str(marker_text).ok();
    let created = marker.as_ref().is_some_and(|m| m.created_annotation);
    let ours = |v: &Value| {
        names_env(v, MAX_REFRESH_ENV)
            && marker
                .as_ref()
                .is_none_or(|m| v.get("value").and_then(Value::as_str) == Some(m.value.as_str()))
    };
    let additional_env = match ns.additional_env.as_deref() {
        None => None,
        Some(text) => match parse_env_list(text) {
            // Someone rewrote it into something else: leave it, drop only our marker.
            Err(_) => Some(text.to_string()),
            Ok(list) => {
                let rest: Vec<Value> = list.into_iter().filter(|v| !ours(v)).collect();
                if rest.is_empty() && created {
                    None
                } else {
                    Some(Value::Array(rest).to_string())
                }
            }
        },
    };
    Some(EnvPatch {
        additional_env,
        marker: None,
    })
}

fn namespace_env(ns: &Namespace) -> NamespaceEnv {
    let a = ns.metadata.annotations.as_ref();
    NamespaceEnv {
        additional_env: a
            .and_then(|a| a.get(PROXY_ADDITIONAL_ENV_ANNOTATION))
            .cloned(),
        marker: a.and_then(|a| a.get(MANAGED_ENV_ANNOTATION)).cloned(),
    }
}

async fn patch_namespace(
    api: &Api<Namespace>,
    ns: &Namespace,
    patch: EnvPatch,
) -> Result<(), StepError> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    // Optimistic concurrency: a concurrent edit makes this a 409 and the step retries.
    let body = json!({"metadata": {
        "resourceVersion": ns.metadata.resource_version,
        "annotations": {
            PROXY_ADDITIONAL_ENV_ANNOTATION: patch.additional_env,
            MANAGED_ENV_ANNOTATION: patch.marker,
        }
    }});
    api.patch(
        &name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &Patch::Merge(&body),
    )
    .traced_write("patch", "Namespace", "", &name)
    .await
    .map(|_| ())
    .map_err(|e| StepError::from_kube(format!("annotating Namespace {name}"), e))
}

/// Namespaces that hold meshed workload pods (outside the control plane).
pub fn workload_namespaces(pods: &[MeshedPod]) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p.is_workload())
        .map(|p| p.pod.namespace.clone())
        .collect()
}

/// Publishes the interval to every namespace with meshed workload pods when the rotation
/// manages it itself (`spec.manageProxyRefreshEnv`); does nothing otherwise.
pub async fn publish_env_to_meshed_namespaces(
    ctx: &StepContext,
    pods: &[MeshedPod],
) -> Result<(), StepError> {
    if !ctx.spec.manage_proxy_refresh_env {
        return Ok(());
    }
    publish_env(ctx, &workload_namespaces(pods)).await
}

/// Sets the interval on each of `namespaces` that does not have it.
pub async fn publish_env(
    ctx: &StepContext,
    namespaces: &BTreeSet<String>,
) -> Result<(), StepError> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    for name in namespaces {
        let Some(ns) = api
            .get_opt(name)
            .await
            .map_err(|e| StepError::from_kube(format!("reading Namespace {name}"), e))?
        else {
            continue;
        };
        if let Some(patch) = add_env(
            &namespace_env(&ns),
            &ctx.spec.workload_certificate_refresh_interval,
        ) {
            patch_namespace(&api, &ns, patch).await?;
        }
    }
    Ok(())
}

/// Removes what [`publish_env`] added, from every namespace that carries the marker.
pub async fn withdraw_env(client: &kube::Client) -> Result<(), StepError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| StepError::from_kube("listing Namespaces", e))?;
    for ns in &list.items {
        if let Some(patch) = remove_env(&namespace_env(ns)) {
            patch_namespace(&api, ns, patch).await?;
        }
    }
    Ok(())
}

/// How long waiting for natural renewal is expected to take: until the last of the
/// unconverged pods' certificates expires, if every unconverged pod answered with a
/// certificate from another issuer (it renews by itself before expiry). `None` as soon as one
/// is unreachable, timed out or invalid: that is a stall once nothing moves.
pub fn renewal_patience<'a>(
    judged: impl IntoIterator<Item = &'a (CertState, Option<jiff::Timestamp>)>,
) -> Option<jiff::Timestamp> {
    let mut latest: Option<jiff::Timestamp> = None;
    for (state, not_after) in judged {
        match (state, not_after) {
            (CertState::Active, _) => {}
            (CertState::OtherIssuer { .. }, Some(t)) => {
                latest = Some(latest.map_or(*t, |l| l.max(*t)));
            }
            _ => return None,
        }
    }
    latest
}

/// The decision over the probe tally.
pub fn decide_refresh(tally: &Tally<CertState>, interval: &str, managed: bool) -> Outcome {
    if tally.is_complete() {
        return Outcome::Done;
    }
    let pods: Vec<String> = tally
        .unconverged
        .iter()
        .take(10)
        .map(|p| format!("{} ({})", p.pod, describe(&p.state)))
        .collect();
    let how = if managed {
        format!("pods restarted during propagation renew within {interval}; restart the others")
    } else {
        format!(
            "a data plane operator renews them within {interval}; without one, wait up to 24h or restart them"
        )
    };
    Outcome::wait(
        format!(
            "{}/{} meshed pods serve a workload certificate from the active issuer; {how}: {}; not yet: {}",
            tally.converged,
            tally.target,
            restart_commands(tally, 5).join("; "),
            pods.join(", ")
        ),
        POLL,
    )
}

/// Probes through a [`ProbeCache`]: a pod already on the active issuer is not probed again
/// while it runs, and a pod that is not is probed again with backoff while its answer stays
/// the same.
#[derive(Default)]
pub struct AccelerateRefresh {
    probes: ProbeCache,
}

#[async_trait]
impl Step for AccelerateRefresh {
    fn name(&self) -> &str {
        names::ACCELERATE_REFRESH
    }

    fn phase(&self) -> Phase {
        Phase::RenewingWorkloadCerts
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(300)
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepReport, StepError> {
        // The bundle invariant first: nothing advances on a broken bundle.
        let guarded = crate::guarded!(ctx);
        let mut progress = guarded.progress();
        let mut drive = super::restarts::Drive::default();
        let outcome = self
            .execute(ctx, guarded, &mut progress, &mut drive)
            .await?;
        Ok(drive.report(names::ACCELERATE_REFRESH, outcome, progress))
    }
}

impl AccelerateRefresh {
    /// Probes the pods the guard listed and judges them by the issuer it read.
    async fn execute(
        &self,
        ctx: &StepContext,
        guarded: Guarded,
        progress: &mut Progress,
        drive: &mut super::restarts::Drive,
    ) -> Result<Outcome, StepError> {
        let Guarded {
            expectation, pods, ..
        } = guarded;
        let interval = ctx.spec.workload_certificate_refresh_interval.clone();
        progress.merge(Progress {
            refresh_interval: Some(Some(interval.clone())),
            ..Default::default()
        });
        let Some(issuer) = expectation.issuer.first().cloned() else {
            return Err(StepError::permanent(
                ErrorCategory::InvalidCertificate,
                "the identity issuer Secret holds no certificate",
            ));
        };
        progress.merge(Progress {
            active_issuer: Some(issuer.summary()),
            ..Default::default()
        });
        let pods: Vec<_> = pods
            .into_iter()
            .filter(|p| p.is_workload() && !p.never_started())
            .collect();
        let on_issuer = issuer.clone();
        let answers = look(
            &ctx.client,
            &ctx.probe_config(),
            &self.probes,
            pods,
            move |o| cert_state(o, &on_issuer) == CertState::Active,
            Backoff::for_refresh_interval(POLL, &interval),
        )
        .await
        .answers();
        let judged: Vec<_> = answers
            .into_iter()
            .map(|(p, o)| (p, (cert_state(&o, &issuer), o.leaf_not_after())))
            .collect();
        let patience = renewal_patience(judged.iter().map(|(_, judged)| judged));
        let mut results: Vec<_> = judged
            .into_iter()
            .map(|(p, (state, _))| (p, state))
            .collect();
        let mut tally = cert_convergence(&results);
        let gone = gone_if_stalled(ctx, names::ACCELERATE_REFRESH, &tally).await?;
        if !gone.is_empty() {
            results.retain(|(p, _)| !gone.contains(&p.pod));
            tally = cert_convergence(&results);
        }
        progress.merge(Progress {
            workload_certificates: Some(tally.to_status(Some(Time(ctx.now)))),
            ..Default::default()
        });
        if let Some(block) = stuck_terminating_block(&tally, ctx.now) {
            return Ok(block);
        }
        let mut outcome = decide_refresh(&tally, &interval, ctx.spec.manage_proxy_refresh_env);
        // spec.automation.workloadRestarts: restart the workloads whose pods still serve a
        // certificate from the previous issuer rather than wait for their renewal.
        *drive = super::restarts::drive(
            ctx,
            names::ACCELERATE_REFRESH,
            &tally.unconverged,
            results.iter().map(|(p, _)| p),
            outcome == Outcome::Done,
        )
        .await?;
        if let Some(until) = patience {
            // Every pod left answers and still serves a valid certificate: it renews from the
            // active issuer on its own before that certificate expires, so waiting until then
            // is not a stall. An unreachable pod gets no such patience.
            outcome = outcome.expected_until(until);
        }
        if outcome == Outcome::Done {
            // Every proxy is on the active issuer: its remembered chain is no use any more.
            self.probes.clear();
            // Clean up whatever we published, whether or not the option is still on.
            withdraw_env(&ctx.client).await?;
            progress.merge(Progress {
                refresh_interval: Some(None),
                ..Default::default()
            });
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_renewal_is_patient_only_while_every_pod_left_answers() {
        let t = |s: i64| jiff::Timestamp::from_second(1_800_000_000 + s).unwrap();
        let other = || CertState::OtherIssuer {
            issuer_fingerprint: None,
        };
        assert_eq!(
            renewal_patience(&[
                (CertState::Active, Some(t(5))),
                (other(), Some(t(100))),
                (other(), Some(t(50))),
            ]),
            Some(t(100)),
            "until the last old certificate expires"
        );
        assert_eq!(
            renewal_patience(&[(other(), Some(t(100))), (CertState::TimedOut, None)]),
            None,
            "an unreachable proxy is a stall, not a renewal to wait for"
        );
        assert_eq!(renewal_patience(&[(CertState::Active, None)]), None);
    }

    fn env(additional: Option<&str>, marker: Option<&str>) -> NamespaceEnv {
        NamespaceEnv {
            additional_env: additional.map(str::to_string),
            marker: marker.map(str::to_string),
        }
    }

    #[test]
    fn adds_and_removes_only_its_own_entry() {
        // Fresh namespace: we create the annotation and remove it entirely afterwards.
        let p = add_env(&env(None, None), "5m").unwrap();
        let v: Value = serde_json::from_str(p.additional_env.as_deref().unwrap()).unwrap();
        assert_eq!(
            v,
            json!([{"name": "LINKERD2_PROXY_IDENTITY_MAX_REFRESH", "value": "5m"}])
        );
        let after = env(p.additional_env.as_deref(), p.marker.as_deref());
        assert_eq!(add_env(&after, "5m"), None, "idempotent");
        assert_eq!(
            remove_env(&after),
            Some(EnvPatch {
                additional_env: None,
                marker: None
            })
        );

        // The user already had other entries: they stay, in place.
        let user = r#"[{"name":"RUST_LOG","value":"debug"}]"#;
        let p = add_env(&env(Some(user), None), "5m").unwrap();
        let after = env(p.additional_env.as_deref(), p.marker.as_deref());
        let removed = remove_env(&after).unwrap();
        let v: Value = serde_json::from_str(removed.additional_env.as_deref().unwrap()).unwrap();
        assert_eq!(v, json!([{"name": "RUST_LOG", "value": "debug"}]));
        assert_eq!(removed.marker, None);

        // The user set MAX_REFRESH themselves: never touched, never removed.
        let theirs = r#"[{"name":"LINKERD2_PROXY_IDENTITY_MAX_REFRESH","value":"1m"}]"#;
        assert_eq!(add_env(&env(Some(theirs), None), "5m"), None);
        assert_eq!(remove_env(&env(Some(theirs), None)), None);

        // Not JSON: left alone.
        assert_eq!(add_env(&env(Some("garbage"), None), "5m"), None);
    }

    #[test]
    fn waits_naming_unreachable_pods() {
        use crate::convergence::PodStatus;
        use crate::rotation::propagation::tests::pod;
        let tally = Tally {
            converged: 1,
            target: 2,
            unconverged: vec![PodStatus {
                meshed: {
                    let mut p = pod("app", "web-1", None);
                    p.owner = None;
                    p
                },
                state: CertState::Unreachable("connection refused".into()),
            }],
        };
        let Outcome::Wait { reason, .. } = decide_refresh(&tally, "5m", false) else {
            panic!()
        };
        assert!(
            reason.contains("1/2")
                && reason.contains("app/web-1 (unreachable: connection refused)"),
            "{reason}"
        );
        assert!(
            reason.contains("kubectl -n app delete pod web-1"),
            "{reason}"
        );
        // Several pods of one workload: one command, with the count.
        let other = |name: &str| PodStatus {
            meshed: {
                let mut p = pod("app", name, None);
                p.owner = Some("statefulset/db".into());
                p
            },
            state: CertState::OtherIssuer {
                issuer_fingerprint: None,
            },
        };
        let tally = Tally {
            converged: 0,
            target: 2,
            unconverged: vec![other("db-0"), other("db-1")],
        };
        let Outcome::Wait { reason, .. } = decide_refresh(&tally, "5m", true) else {
            panic!()
        };
        assert!(
            reason.contains("kubectl -n app rollout restart statefulset/db (2 pods)"),
            "{reason}"
        );
        assert_eq!(reason.matches("rollout restart").count(), 1, "{reason}");
        let done = Tally::<CertState> {
            converged: 2,
            target: 2,
            unconverged: vec![],
        };
        assert_eq!(decide_refresh(&done, "5m", false), Outcome::Done);
    }
}

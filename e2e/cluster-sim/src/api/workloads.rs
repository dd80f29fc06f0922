//! What the API server itself does for the workload kinds (as opposed to their controllers,
//! which live in `mesh/`): the defaults a real server fills in on every write (kubectl
//! reads them: `rollout status sts` refuses a StatefulSet without `updateStrategy.type`),
//! a Job's generated selector, the few validations without which a workload could never
//! run, graceful deletion of pods (`deletionTimestamp` + grace period, finished by the
//! kubelet) and the `pods/eviction` subresource that honours PodDisruptionBudgets.
//!
//! Semantics follow kube-apiserver's registry strategies (`pkg/apis/*/v1/defaults.go`,
//! `pkg/registry/batch/job/strategy.go`, `pkg/registry/core/pod/strategy.go`,
//! `pkg/registry/core/pod/storage/eviction.go`).

use super::status::{ApiError, ApiResult};
use crate::store::{ResourceKey, ResourceType, Store, StoreError};
use serde_json::{json, Value};
use std::sync::Arc;

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if obj.is_object() && obj.get(key).is_none_or(Value::is_null) {
        obj[key] = v;
    }
}

/// Pod spec defaults (`SetDefaults_PodSpec`), for pods and pod templates.
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
}

fn default_template(tpl: &mut Value) {
    if tpl["spec"].is_object() {
        default_pod_spec(&mut tpl["spec"]);
    }
}

/// Job spec defaults (`SetDefaults_Job`), without the selector (set at create).
fn default_job_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    if spec["podFailurePolicy"].is_null() {
        set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
    default_template(&mut spec["template"]);
}

/// A Job's generated selector and template labels (`jobStrategy.PrepareForCreate`), unless
/// `manualSelector` is true. Needs the Job's uid: one is assigned here if the object has
/// none yet (the store keeps it).
pub fn generate_job_selector(job: &mut Value) {
    if job["spec"]["manualSelector"].as_bool() == Some(true) {
        return;
    }
    let uid = match job["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) {
        Some(u) => u.to_string(),
        None => {
            let u = crate::store::new_uid();
            job["metadata"]["uid"] = json!(u);
            u
        }
    };
    let name = job["metadata"]["name"].as_str().unwrap_or("").to_string();
    job["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let tpl = &mut job["spec"]["template"];
    if !tpl["metadata"].is_object() {
        tpl["metadata"] = json!({});
    }
    if !tpl["metadata"]["labels"].is_object() {
        tpl["metadata"]["labels"] = json!({});
    }
    let labels = &mut tpl["metadata"]["labels"];
    labels["batch.kubernetes.io/controller-uid"] = json!(uid);
    labels["batch.kubernetes.io/job-name"] = json!(name);
    labels["controller-uid"] = json!(uid);
    labels["job-name"] = json!(name);
}

/// A workload object (StatefulSet, DaemonSet, Job, CronJob) with the defaults the API
/// server would give it, for objects the simulator itself creates through the store.
pub fn default_workload(obj: &mut Value) {
    let plural = match obj["kind"].as_str() {
        Some("StatefulSet") => "statefulsets",
        Some("DaemonSet") => "daemonsets",
        Some("Job") => "jobs",
        Some("CronJob") => "cronjobs",
        _ => return,
    };
    let group = if plural.ends_with("sets") {
        "apps"
    } else {
        "batch"
    };
    let t = ResourceType {
        key: ResourceKey::new(group, plural),
        version: "v1".into(),
        kind: obj["kind"].as_str().unwrap_or("").to_string(),
        list_kind: String::new(),
        singular: String::new(),
        namespaced: true,
        short_names: Vec::new(),
        status_subresource: true,
        categories: Vec::new(),
        printer_columns: Vec::new(),
        verbs: Vec::new(),
    };
    let _ = admit(&t, obj, true);
}

/// A Job as the API server stores a new one: spec defaults and the generated selector
/// (what the CronJob controller's Jobs get when it creates them).
pub fn default_job(job: &mut Value) {
    default_job_spec(&mut job["spec"]);
    generate_job_selector(job);
}

fn is(t: &ResourceType, group: &str, plural: &str) -> bool {
    t.key.group == group && t.key.plural == plural
}

/// Defaults and the validations the workload kinds need, on every write through the API.
/// `create` adds what only creation does (a Job's selector).
pub fn admit(t: &ResourceType, obj: &mut Value, create: bool) -> ApiResult<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let spec = &mut obj["spec"];
    if is(t, "", "pods") {
        default_pod_spec(spec);
    } else if is(t, "apps", "statefulsets") {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        set_default(spec, "updateStrategy", json!({}));
        set_default(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
        if spec["updateStrategy"]["type"] == "RollingUpdate" {
            set_default(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
            set_default(
                &mut spec["updateStrategy"]["rollingUpdate"],
                "partition",
                json!(0),
            );
        }
        default_template(&mut spec["template"]);
        check_selector(t, &name, spec)?;
    } else if is(t, "apps", "daemonsets") {
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "updateStrategy", json!({}));
        set_default(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
        if spec["updateStrategy"]["type"] == "RollingUpdate" {
            set_default(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
            let ru = &mut spec["updateStrategy"]["rollingUpdate"];
            set_default(ru, "maxUnavailable", json!(1));
            set_default(ru, "maxSurge", json!(0));
        }
        default_template(&mut spec["template"]);
        check_selector(t, &name, spec)?;
    } else if is(t, "batch", "jobs") {
        default_job_spec(spec);
        if create {
            generate_job_selector(obj);
        }
        check_job_template(t, &name, &obj["spec"]["template"], "spec.template")?;
    } else if is(t, "batch", "cronjobs") {
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
        default_job_spec(&mut spec["jobTemplate"]["spec"]);
        let schedule = spec["schedule"].as_str().unwrap_or("").to_string();
        if let Err(e) = crate::mesh::cron::Schedule::parse(&schedule) {
            return Err(ApiError::invalid(
                &t.kind,
                &name,
                "spec.schedule",
                &format!("Invalid value: {schedule:?}: {e}"),
            ));
        }
        if let Some(tz) = spec["timeZone"].as_str() {
            if jiff::tz::TimeZone::get(tz).is_err() {
                return Err(ApiError::invalid(
                    &t.kind,
                    &name,
                    "spec.timeZone",
                    &format!("Invalid value: {tz:?}: unknown time zone {tz}"),
                ));
            }
        }
        check_job_template(
            t,
            &name,
            &obj["spec"]["jobTemplate"]["spec"]["template"],
            "spec.jobTemplate.spec.template",
        )?;
    }
    Ok(())
}

fn check_selector(t: &ResourceType, name: &str, spec: &Value) -> ApiResult<()> {
    let Some(sel) = spec["selector"]["matchLabels"]
        .as_object()
        .filter(|m| !m.is_empty())
    else {
        if spec["selector"]["matchExpressions"].is_array() {
            return Ok(());
        }
        return Err(ApiError::invalid(
            &t.kind,
            name,
            "spec.selector",
            "Required value",
        ));
    };
    let labels = &spec["template"]["metadata"]["labels"];
    if sel.iter().all(|(k, v)| labels[k] == *v) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &t.kind,
            name,
            "spec.template.metadata.labels",
            &format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                labels
            ),
        ))
    }
}

fn check_job_template(t: &ResourceType, name: &str, tpl: &Value, path: &str) -> ApiResult<()> {
    match tpl["spec"]["restartPolicy"].as_str() {
        Some("Never" | "OnFailure") => Ok(()),
        other => Err(ApiError::invalid(
            &t.kind,
            name,
            &format!("{path}.spec.restartPolicy"),
            &format!(
                "Unsupported value: {:?}: supported values: \"OnFailure\", \"Never\"",
                other.unwrap_or("Always")
            ),
        )),
    }
}

// === graceful pod deletion ===

/// The grace period a pod delete gets (`podStrategy.CheckGracefulDelete`): the request's
/// `gracePeriodSeconds`, else the pod's `terminationGracePeriodSeconds` (30 by default);
/// 0 for pods never scheduled to a node and for pods that already finished.
pub fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let mut period = requested.unwrap_or_else(|| {
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30)
    });
    if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        period = 0;
    }
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) {
        period = 0;
    }
    if period < 0 {
        period = 1;
    }
    period
}

/// Deletes a pod as the API server does: with a grace period > 0 it only gets a
/// `deletionTimestamp` (now + grace) and `deletionGracePeriodSeconds`, and the kubelet
/// removes it once its containers stopped; with 0 it goes at once (finalizers aside). A
/// second delete of a terminating pod changes nothing unless it asks for 0.
pub fn delete_pod(
    store: &Store,
    ns: &str,
    name: &str,
    requested_grace: Option<i64>,
) -> Result<Arc<Value>, StoreError> {
    let key = ResourceKey::new("", "pods");
    let Some(current) = store.get(&key, Some(ns), name) else {
        return Err(StoreError::NotFound {
            kind: "pods".into(),
            name: name.into(),
        });
    };
    let grace = pod_grace_period(&current, requested_grace);
    if grace == 0 {
        return store.delete(&key, Some(ns), name);
    }
    if current["metadata"]["deletionTimestamp"].is_string() {
        return Ok(current);
    }
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(grace))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    store.mutate(&key, Some(ns), name, |p| {
        p["metadata"]["deletionTimestamp"] = json!(stamp);
        p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        Ok(())
    })
}

// === the eviction subresource ===

fn pdb_key() -> ResourceKey {
    ResourceKey::new("policy", "poddisruptionbudgets")
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn selector_matches(sel: &Value, labels: &Value) -> bool {
    if !sel.is_object() {
        return false;
    }
    let empty = serde_json::Map::new();
    let labels = labels.as_object().unwrap_or(&empty);
    let ml_ok = sel["matchLabels"].as_object().is_none_or(|m| {
        m.iter()
            .all(|(k, v)| labels.get(k).and_then(Value::as_str) == v.as_str())
    });
    let me_ok = sel["matchExpressions"].as_array().is_none_or(|es| {
        es.iter().all(|e| {
            let k = e["key"].as_str().unwrap_or("");
            let vals: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let have = labels.get(k).and_then(Value::as_str);
            match e["operator"].as_str() {
                Some("In") => have.is_some_and(|h| vals.contains(&h)),
                Some("NotIn") => have.is_none_or(|h| !vals.contains(&h)),
                Some("Exists") => have.is_some(),
                Some("DoesNotExist") => have.is_none(),
                _ => false,
            }
        })
    });
    ml_ok && me_ok
}

/// Whether a PodDisruptionBudget's selector selects these labels (an empty selector, `{}`,
/// selects every pod of the namespace in policy/v1).
pub fn pdb_selects(pdb: &Value, labels: &Value) -> bool {
    let sel = &pdb["spec"]["selector"];
    if sel.as_object().is_some_and(|m| m.is_empty()) {
        return true;
    }
    selector_matches(sel, labels)
}

fn too_many_requests(cause: String) -> ApiError {
    ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    )
    .details(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}))
}

/// `POST pods/NAME/eviction`: deletes the pod (with its grace period, or the one in the
/// Eviction's `deleteOptions`) unless the PodDisruptionBudget that covers it allows no
/// disruption now, which answers 429 as a real server does. Returns the `Status` to send.
pub fn evict(store: &Store, ns: &str, name: &str, body: &Value, dry_run: bool) -> ApiResult<Value> {
    if body["kind"].as_str().is_some_and(|k| k != "Eviction") {
        return Err(ApiError::bad_request(format!(
            "the body of an eviction must be an Eviction (policy/v1), not a {}",
            body["kind"].as_str().unwrap_or("")
        )));
    }
    if let Some(n) = body["metadata"]["name"].as_str() {
        if n != name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
    }
    let opts = &body["deleteOptions"];
    let grace = opts["gracePeriodSeconds"].as_i64();
    let dry_run = dry_run
        || opts["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d == "All"));
    let pods = ResourceKey::new("", "pods");
    let pod = store.get(&pods, Some(ns), name).ok_or_else(|| {
        ApiError::not_found("pods", name).details(json!({"name": name, "kind": "pods"}))
    })?;
    if let Some(uid) = opts["preconditions"]["uid"].as_str() {
        if pod["metadata"]["uid"].as_str() != Some(uid) {
            return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on Pod \"{name}\": the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated", pod["metadata"]["uid"].as_str().unwrap_or(""))));
        }
    }
    let success =
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    let ignore_pdb = matches!(phase, "Succeeded" | "Failed" | "Pending")
        || pod["metadata"]["deletionTimestamp"].is_string();
    let do_delete = |store: &Store| -> ApiResult<()> {
        if dry_run {
            return Ok(());
        }
        // DisruptionTarget, as the real eviction writes before deleting.
        let _ = store.mutate(&pods, Some(ns), name, |p| {
            if p["metadata"]["deletionTimestamp"].is_string() {
                return Ok(());
            }
            if !p["status"]["conditions"].is_array() {
                p["status"]["conditions"] = json!([]);
            }
            if let Some(cs) = p["status"]["conditions"].as_array_mut() {
                cs.retain(|c| c["type"] != "DisruptionTarget");
                cs.push(json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting", "lastTransitionTime": crate::mesh::now_rfc3339()}));
            }
            Ok(())
        });
        match delete_pod(store, ns, name, grace) {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    };
    if ignore_pdb {
        do_delete(store)?;
        return Ok(success);
    }
    let (pdbs, _) = store.list(&pdb_key(), Some(ns));
    let matching: Vec<&Arc<Value>> = pdbs
        .iter()
        .filter(|p| pdb_selects(p, &pod["metadata"]["labels"]))
        .collect();
    if matching.len() > 1 {
        return Err(ApiError::new(
            500,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let Some(pdb) = matching.first() else {
        do_delete(store)?;
        return Ok(success);
    };
    let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
    let st = &pdb["status"];
    let current = st["currentHealthy"].as_i64().unwrap_or(0);
    let desired = st["desiredHealthy"].as_i64().unwrap_or(0);
    if !pod_ready(&pod) {
        let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
        if always || (current >= desired && desired > 0) {
            do_delete(store)?;
            return Ok(success);
        }
    }
    let observed = st["observedGeneration"].as_i64().unwrap_or(0);
    if observed < pdb["metadata"]["generation"].as_i64().unwrap_or(1) {
        let mut e = too_many_requests(format!(
            "The disruption budget {pdb_name} is still being processed by the server."
        ));
        e.retry_after = Some(10);
        e.details["retryAfterSeconds"] = json!(10);
        return Err(e);
    }
    let allowed = st["disruptionsAllowed"].as_i64().unwrap_or(0);
    if allowed < 0 {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("poddisruptionbudgets.policy \"{pdb_name}\" is forbidden: pdb disruptions allowed is negative"),
        ));
    }
    if allowed == 0 {
        let cond = st["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionAllowed"));
        let msg = match cond {
            Some(c) if c["status"] == "False" && c["reason"] == "SyncFailed" => format!(
                "The disruption budget {pdb_name} does not allow evicting pods currently because it failed sync: {}",
                c["message"].as_str().unwrap_or("")
            ),
            _ => format!(
                "The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"
            ),
        };
        return Err(too_many_requests(msg));
    }
    if !dry_run {
        // Decrement and record the pod as disrupted, so the disruption controller does not
        // count it healthy while it terminates.
        let now = crate::mesh::now_rfc3339();
        let r = store.mutate(&pdb_key(), Some(ns), &pdb_name, |p| {
            let left = p["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
            if left <= 0 {
                return Err(StoreError::Conflict {
                    plural: "poddisruptionbudgets".into(),
                    name: pdb_name.clone(),
                });
            }
            p["status"]["disruptionsAllowed"] = json!(left - 1);
            if !p["status"]["disruptedPods"].is_object() {
                p["status"]["disruptedPods"] = json!({});
            }
            p["status"]["disruptedPods"][name] = json!(now);
            if left - 1 == 0 {
                crate::mesh::set_condition(
                    p,
                    "DisruptionAllowed",
                    "False",
                    "InsufficientPods",
                    "",
                    p["status"]["observedGeneration"].as_i64(),
                );
            }
            Ok(())
        });
        if let Err(StoreError::Conflict { .. }) = r {
            return Err(too_many_requests(format!(
                "The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"
            )));
        }
    }
    do_delete(store)?;
    Ok(success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_period_rules() {
        let pod = |node: Option<&str>, phase: &str, tgp: Option<i64>| {
            let mut p = json!({"spec": {}, "status": {"phase": phase}});
            if let Some(n) = node {
                p["spec"]["nodeName"] = json!(n);
            }
            if let Some(t) = tgp {
                p["spec"]["terminationGracePeriodSeconds"] = json!(t);
            }
            p
        };
        assert_eq!(pod_grace_period(&pod(Some("n"), "Running", None), None), 30);
        assert_eq!(
            pod_grace_period(&pod(Some("n"), "Running", Some(90)), None),
            90
        );
        assert_eq!(
            pod_grace_period(&pod(Some("n"), "Running", Some(90)), Some(5)),
            5
        );
        assert_eq!(
            pod_grace_period(&pod(None, "Running", Some(90)), None),
            0,
            "unscheduled"
        );
        assert_eq!(
            pod_grace_period(&pod(Some("n"), "Succeeded", Some(90)), None),
            0,
            "finished"
        );
        assert_eq!(
            pod_grace_period(&pod(Some("n"), "Running", None), Some(-3)),
            1
        );
    }

    #[test]
    fn pdb_selectors() {
        let labels = json!({"app": "web", "tier": "front"});
        assert!(pdb_selects(&json!({"spec": {"selector": {}}}), &labels));
        assert!(pdb_selects(
            &json!({"spec": {"selector": {"matchLabels": {"app": "web"}}}}),
            &labels
        ));
        assert!(!pdb_selects(
            &json!({"spec": {"selector": {"matchLabels": {"app": "db"}}}}),
            &labels
        ));
        assert!(pdb_selects(
            &json!({"spec": {"selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "x"]}]}}}),
            &labels
        ));
        assert!(
            !pdb_selects(&json!({"spec": {}}), &labels),
            "no selector selects nothing"
        );
    }
}

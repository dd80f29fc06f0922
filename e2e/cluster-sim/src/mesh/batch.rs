//! The Job, CronJob and TTL-after-finished controllers, after kube-controller-manager's
//! (`pkg/controller/job`, `pkg/controller/cronjob`, `pkg/controller/ttlafterfinished`):
//! Jobs run `parallelism` pods until `completions` succeed (or, without `completions`, one
//! does), replace failed pods with back-off up to `backoffLimit` (counting container
//! restarts under `restartPolicy: OnFailure`), honour `activeDeadlineSeconds` and
//! `suspend`, and report `active`/`ready`/`succeeded`/`failed`/`terminating` with the
//! `SuccessCriteriaMet`/`Complete` or `FailureTarget`/`Failed` conditions; finished Jobs
//! go `ttlSecondsAfterFinished` after they finished. CronJobs create Jobs named
//! `<cronjob>-<scheduled time in minutes>` on their schedule, in the simulator's schedule
//! time ([`super::cron::SimClock`]), with `concurrencyPolicy`, `startingDeadlineSeconds`,
//! `suspend`, `timeZone` and the history limits.

use super::cron::Schedule;
use super::workloads::{active, controller_uid, deleting, owner_ref, pod_ready, uid};
use super::{
    condition_true, cronjobs, jobs, mutate_if_exists, name_of, now_rfc3339, ns_of, parse_ts, pods,
    record_event, set_condition, ts_rfc3339, Shared,
};
use crate::store::{Store, StoreError};
use jiff::Timestamp;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) async fn run(shared: Arc<Shared>) {
    let Ok((_, mut rx)) = shared.store.watch(None) else {
        return;
    };
    let relevant = |ev: &crate::store::WatchEvent| {
        let k = &ev.key;
        (k.group == "batch" && (k.plural == "jobs" || k.plural == "cronjobs"))
            || (k.group.is_empty()
                && k.plural == "pods"
                // Only a Job's pods matter to the Job controller.
                && std::iter::once(&ev.object)
                    .chain(ev.previous.as_ref())
                    .any(|p| super::controller_of_kind(p, "Job").is_some()))
    };
    // Each pass looks only at the Jobs and CronJobs the events since the last one name (a
    // Job, a CronJob, or a pod a Job owns; a Job's CronJob with it), as kube-controller-manager
    // queues them by key. A full pass runs when a timer a pass set is due (a CronJob's next
    // schedule minute, a back-off, a TTL, a deadline), every 2 s (longer on a large cluster,
    // see `SafetyNet`), after an error and after a lagging watch. A full pass on every
    // change cost most of the simulator's core with a CronJob in each of 500 namespaces.
    let mut net = super::SafetyNet::new(Duration::from_secs(2));
    let mut timer: Option<tokio::time::Instant> = None;
    let mut changes = super::Changes::All;
    loop {
        let now = tokio::time::Instant::now();
        let timer_due = timer.is_some_and(|t| t <= now);
        let result = match &changes {
            super::Changes::Events(evs) if !net.due() && !timer_due => {
                reconcile_changed(&shared, evs)
            }
            super::Changes::Due if !net.due() && !timer_due => Ok(None),
            _ => {
                timer = None;
                net.run(|| reconcile_all(&shared))
            }
        };
        match result {
            Ok(Some(wake)) => {
                let at = now + wake;
                timer = Some(timer.map_or(at, |t| t.min(at)));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "job/cronjob reconcile failed; retrying");
                timer = Some(now + Duration::from_millis(200));
                net.now();
            }
        }
        let deadline = timer.map_or(net.deadline(), |t| t.min(net.deadline()));
        match super::wait_for_changes(&mut rx, &shared.cancel, deadline, &relevant).await {
            Some(c) => changes = c,
            None => return,
        }
    }
}

/// One pass over the Jobs and CronJobs `events` name, as [`reconcile_all`] would treat them;
/// returns how long until something they set is due.
fn reconcile_changed(
    shared: &Shared,
    events: &[crate::store::WatchEvent],
) -> Result<Option<Duration>, StoreError> {
    use super::controller_of_kind;
    use std::collections::BTreeSet;
    let store = &shared.store;
    let mut named_jobs: BTreeSet<(String, String)> = BTreeSet::new();
    let mut named_cjs: BTreeSet<(String, String)> = BTreeSet::new();
    for ev in events {
        let own = |o: &Value| (ns_of(o).to_string(), name_of(o).to_string());
        let versions = || std::iter::once(&ev.object).chain(ev.previous.as_ref());
        match ev.key.plural.as_str() {
            "jobs" => {
                named_jobs.insert(own(&ev.object));
                // Its CronJob counts its history and active Jobs (a deleted Job included).
                named_cjs.extend(versions().filter_map(|j| controller_of_kind(j, "CronJob")));
            }
            "cronjobs" => {
                named_cjs.insert(own(&ev.object));
            }
            "pods" => named_jobs.extend(versions().filter_map(|p| controller_of_kind(p, "Job"))),
            _ => {}
        }
    }
    let mut wake = None;
    for (ns, name) in &named_jobs {
        if let Some(j) = store.get(&jobs(), Some(ns), name) {
            named_cjs.extend(controller_of_kind(&j, "CronJob"));
            let ps = store.list_owned(&pods(), uid(&j));
            wake = soonest(wake, reconcile_job(shared, &j, &ps)?);
        }
    }
    for (ns, name) in &named_cjs {
        if let Some(cj) = store.get(&cronjobs(), Some(ns), name) {
            let js = store.list_owned(&jobs(), uid(&cj));
            let pods_by_owner = pods_by_job(store, &js);
            wake = soonest(wake, reconcile_cronjob(shared, &cj, &js, &pods_by_owner)?);
        }
    }
    Ok(wake)
}

fn soonest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The pods of each of `jobs`, by Job uid: from the store's owner index, not every pod in the
/// cluster.
fn pods_by_job(store: &Store, jobs: &[Arc<Value>]) -> HashMap<String, Vec<Arc<Value>>> {
    jobs.iter()
        .map(|j| (uid(j).to_string(), store.list_owned(&pods(), uid(j))))
        .collect()
}

/// One pass; returns how long until something is due (a CronJob's next run, a Job's
/// back-off, a TTL).
pub(crate) fn reconcile_all(shared: &Shared) -> Result<Option<Duration>, StoreError> {
    let store = &shared.store;
    let (all_jobs, _) = store.list(&jobs(), None);
    let (all_cjs, _) = store.list(&cronjobs(), None);
    if all_jobs.is_empty() && all_cjs.is_empty() {
        return Ok(None);
    }
    let pods_by_owner = pods_by_job(store, &all_jobs);
    let mut jobs_by_owner: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    let mut wake = None;
    for j in &all_jobs {
        if let Some(o) = controller_uid(j) {
            jobs_by_owner
                .entry(o.to_string())
                .or_default()
                .push(j.clone());
        }
        let ps = pods_by_owner.get(uid(j)).map(Vec::as_slice).unwrap_or(&[]);
        wake = soonest(wake, reconcile_job(shared, j, ps)?);
    }
    for cj in &all_cjs {
        let js = jobs_by_owner.get(uid(cj)).map(Vec::as_slice).unwrap_or(&[]);
        wake = soonest(wake, reconcile_cronjob(shared, cj, js, &pods_by_owner)?);
    }
    Ok(wake)
}

/// `Complete` or `Failed` (True).
pub fn job_finished(j: &Value) -> Option<&'static str> {
    if condition_true(j, "Complete") {
        Some("Complete")
    } else if condition_true(j, "Failed") {
        Some("Failed")
    } else {
        None
    }
}

/// When a finished Job finished (its `completionTime`, else its Failed condition).
fn finish_time(j: &Value) -> Option<Timestamp> {
    parse_ts(&j["status"]["completionTime"])
        .or_else(|| super::condition(j, "Failed").and_then(|c| parse_ts(&c["lastTransitionTime"])))
}

/// Deletes a Job and (background propagation) its pods.
fn delete_job(store: &Store, j: &Value, pods: &[Arc<Value>]) -> Result<(), StoreError> {
    for p in pods {
        let _ = store.delete(&super::pods(), Some(ns_of(p)), name_of(p));
    }
    match store.delete(&jobs(), Some(ns_of(j)), name_of(j)) {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn restarts(p: &Value) -> i64 {
    p["status"]["containerStatuses"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["name"] != super::PROXY_CONTAINER)
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn last_failure(ps: &[Arc<Value>]) -> Option<Timestamp> {
    ps.iter()
        .filter(|p| p["status"]["phase"] == "Failed")
        .filter_map(|p| {
            p["status"]["containerStatuses"]
                .as_array()?
                .iter()
                .filter_map(|c| parse_ts(&c["state"]["terminated"]["finishedAt"]))
                .max()
        })
        .max()
}

fn new_job_pod(job: &Value) -> Value {
    let tpl = &job["spec"]["template"];
    let mut meta = tpl["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    let labels = &mut meta["labels"];
    if labels["batch.kubernetes.io/job-name"].is_null() {
        labels["batch.kubernetes.io/job-name"] = json!(name_of(job));
        labels["job-name"] = json!(name_of(job));
        labels["batch.kubernetes.io/controller-uid"] = json!(uid(job));
        labels["controller-uid"] = json!(uid(job));
    }
    meta["generateName"] = json!(format!("{}-", name_of(job)));
    meta["namespace"] = json!(ns_of(job));
    meta["ownerReferences"] = owner_ref(job);
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": tpl["spec"].clone()})
}

fn reconcile_job(
    shared: &Shared,
    job: &Value,
    ps: &[Arc<Value>],
) -> Result<Option<Duration>, StoreError> {
    let store = &shared.store;
    let ns = ns_of(job).to_string();
    let name = name_of(job).to_string();
    let now = Timestamp::now();
    if deleting(job) {
        return Ok(None);
    }
    // Finished: clean up, and go once the TTL has passed.
    if let Some(_how) = job_finished(job) {
        for p in ps.iter().filter(|p| active(p)) {
            super::workloads::delete_pod(store, p)?;
        }
        let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_i64() else {
            return Ok(None);
        };
        let Some(done) = finish_time(job) else {
            return Ok(None);
        };
        let expire = done
            .checked_add(jiff::SignedDuration::from_secs(ttl.max(0)))
            .unwrap_or(done);
        if now >= expire {
            delete_job(store, job, ps)?;
            return Ok(None);
        }
        return Ok(Some(Duration::from_secs_f64(
            expire.duration_since(now).as_secs_f64().max(0.0),
        )));
    }
    let spec = &job["spec"];
    let suspended = spec["suspend"].as_bool() == Some(true);
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
    let completions = spec["completions"].as_i64();
    let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
    let on_failure = spec["template"]["spec"]["restartPolicy"] == "OnFailure";
    let active_pods: Vec<&Arc<Value>> = ps.iter().filter(|p| active(p)).collect();
    let terminating = ps
        .iter()
        .filter(|p| deleting(p) && !super::workloads::finished(p))
        .count() as i64;
    let succeeded = (ps
        .iter()
        .filter(|p| p["status"]["phase"] == "Succeeded")
        .count() as i64)
        .max(job["status"]["succeeded"].as_i64().unwrap_or(0));
    let failed_pods = (ps
        .iter()
        .filter(|p| p["status"]["phase"] == "Failed")
        .count() as i64)
        .max(job["status"]["failed"].as_i64().unwrap_or(0));
    let failures = failed_pods
        + if on_failure {
            active_pods.iter().map(|p| restarts(p)).sum::<i64>()
        } else {
            0
        };
    let start = parse_ts(&job["status"]["startTime"]).or((!suspended).then_some(now));
    let mut wake = None;

    // Has it reached an end?
    let deadline_exceeded = spec["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|ads| start.is_some_and(|s| now.duration_since(s).as_secs() >= ads));
    if let Some(ads) = spec["activeDeadlineSeconds"].as_i64() {
        if let Some(s) = start {
            let left = ads - now.duration_since(s).as_secs();
            if left > 0 {
                wake = Some(Duration::from_secs(left as u64));
            }
        }
    }
    let failure: Option<(&str, &str)> = if super::condition_true(job, "FailureTarget") {
        let c = super::condition(job, "FailureTarget");
        let reason = match c.and_then(|c| c["reason"].as_str()) {
            Some("DeadlineExceeded") => (
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
            _ => (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
        };
        Some(reason)
    } else if failures > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline_exceeded {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };
    let success = failure.is_none()
        && match completions {
            Some(c) => succeeded >= c,
            None => succeeded >= 1 && active_pods.is_empty(),
        };

    if let Some((_, _)) = failure {
        for p in &active_pods {
            super::workloads::delete_pod(store, p)?;
        }
    } else if !success {
        // Pods wanted now.
        let want = if suspended {
            0
        } else {
            match completions {
                Some(c) => parallelism.min((c - succeeded).max(0)),
                None if succeeded > 0 => 0,
                None => parallelism,
            }
        };
        let have = active_pods.len() as i64;
        if have > want {
            let mut extra = active_pods.clone();
            extra.sort_by_key(|p| pod_ready(p));
            for p in extra.iter().take((have - want) as usize) {
                super::workloads::delete_pod(store, p)?;
            }
        } else if have < want {
            // Exponential back-off after failures (10s doubling upstream; crash_backoff here).
            let delay = if failed_pods > 0 {
                shared.durations.crash_backoff * 2u32.pow((failed_pods - 1).min(5) as u32)
            } else {
                Duration::ZERO
            };
            let ready_at = last_failure(ps).map(|t| {
                t.checked_add(jiff::SignedDuration::try_from(delay).unwrap_or_default())
                    .unwrap_or(t)
            });
            match ready_at.filter(|t| *t > now) {
                Some(t) => {
                    wake = soonest(
                        wake,
                        Some(Duration::from_secs_f64(t.duration_since(now).as_secs_f64())),
                    );
                }
                None => {
                    for _ in have..want {
                        match store.create(&pods(), new_job_pod(job)) {
                            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
    }

    // Status.
    let ready = active_pods.iter().filter(|p| pod_ready(p)).count() as i64;
    let all_stopped = active_pods.is_empty() && terminating == 0;
    let generation = job["metadata"]["generation"].as_i64();
    let mut events: Vec<(&str, &str, String)> = Vec::new();
    let r = mutate_if_exists(store, &jobs(), Some(&ns), &name, |o| {
        let st = &mut o["status"];
        if !st.is_object() {
            *st = json!({});
        }
        st["active"] = json!(active_pods.len());
        st["ready"] = json!(ready);
        st["succeeded"] = json!(succeeded);
        st["failed"] = json!(failed_pods);
        st["terminating"] = json!(terminating);
        st["uncountedTerminatedPods"] = json!({});
        if st["startTime"].is_null() {
            if let Some(s) = start {
                st["startTime"] = json!(ts_rfc3339(s));
            }
        }
        for k in ["active", "succeeded", "failed"] {
            if st[k] == 0 {
                if let Some(m) = st.as_object_mut() {
                    m.remove(k);
                }
            }
        }
        if let Some((reason, message)) = failure {
            if !condition_true(o, "FailureTarget") {
                set_condition(o, "FailureTarget", "True", reason, message, None);
            }
            if all_stopped {
                set_condition(o, "Failed", "True", reason, message, None);
                events.push(("Warning", reason, message.to_string()));
            }
        } else if success {
            if !condition_true(o, "SuccessCriteriaMet") {
                set_condition(
                    o,
                    "SuccessCriteriaMet",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    None,
                );
            }
            if all_stopped {
                set_condition(
                    o,
                    "Complete",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    None,
                );
                o["status"]["completionTime"] = json!(now_rfc3339());
                events.push(("Normal", "Completed", "Job completed".to_string()));
            }
        } else if suspended {
            set_condition(
                o,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                None,
            );
        } else if super::condition(o, "Suspended").is_some() {
            set_condition(o, "Suspended", "False", "JobResumed", "Job resumed", None);
        }
        let _ = generation;
        Ok(())
    })?;
    if let Some(j) = r {
        for (t, reason, msg) in events {
            record_event(store, &j, t, reason, &msg, "job-controller");
        }
    }
    Ok(wake)
}

// === CronJob ===

const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

fn job_ref(j: &Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "name": name_of(j), "namespace": ns_of(j),
        "uid": uid(j), "resourceVersion": j["metadata"]["resourceVersion"],
    })
}

/// Schedule time rounded to its minute.
fn minute_of(t: Timestamp) -> i64 {
    (t.as_second() as f64 / 60.0).round() as i64
}

fn reconcile_cronjob(
    shared: &Shared,
    cj: &Value,
    owned_jobs: &[Arc<Value>],
    pods_by_owner: &HashMap<String, Vec<Arc<Value>>>,
) -> Result<Option<Duration>, StoreError> {
    let store = &shared.store;
    let clock = &shared.clock;
    let ns = ns_of(cj).to_string();
    let name = name_of(cj).to_string();
    if deleting(cj) {
        return Ok(None);
    }
    let spec = &cj["spec"];
    let pods_of = |j: &Value| pods_by_owner.get(uid(j)).cloned().unwrap_or_default();
    let mut events: Vec<(&str, &str, String)> = Vec::new();

    // Finished Jobs: history limits.
    let mut done_ok: Vec<&Arc<Value>> = owned_jobs
        .iter()
        .filter(|j| job_finished(j) == Some("Complete"))
        .collect();
    let mut done_failed: Vec<&Arc<Value>> = owned_jobs
        .iter()
        .filter(|j| job_finished(j) == Some("Failed"))
        .collect();
    let mut gone: Vec<String> = Vec::new();
    for (list, limit) in [
        (
            &mut done_ok,
            spec["successfulJobsHistoryLimit"].as_i64().unwrap_or(3),
        ),
        (
            &mut done_failed,
            spec["failedJobsHistoryLimit"].as_i64().unwrap_or(1),
        ),
    ] {
        list.sort_by_key(|j| finish_time(j));
        let excess = list.len().saturating_sub(limit.max(0) as usize);
        for j in list.iter().take(excess) {
            delete_job(store, j, &pods_of(j))?;
            gone.push(name_of(j).to_string());
            events.push((
                "Normal",
                "SuccessfulDelete",
                format!("Deleted job {}", name_of(j)),
            ));
        }
    }
    let mut active_jobs: Vec<Arc<Value>> = owned_jobs
        .iter()
        .filter(|j| job_finished(j).is_none() && !deleting(j))
        .cloned()
        .collect();
    let last_ok = owned_jobs
        .iter()
        .filter(|j| job_finished(j) == Some("Complete"))
        .filter_map(|j| finish_time(j))
        .max();
    for j in owned_jobs {
        if let Some(how) = job_finished(j) {
            let was_active = cj["status"]["active"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["uid"] == uid(j)));
            if was_active {
                events.push((
                    "Normal",
                    "SawCompletedJob",
                    format!("Saw completed job: {}, status: {how}", name_of(j)),
                ));
            }
        }
    }

    // The schedule.
    let tz = spec["timeZone"]
        .as_str()
        .and_then(|z| jiff::tz::TimeZone::get(z).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let schedule = match Schedule::parse(spec["schedule"].as_str().unwrap_or("")) {
        Ok(s) => Some(s),
        Err(e) => {
            if !cj["status"]["lastScheduleTime"].is_string() && owned_jobs.is_empty() {
                tracing::debug!(cronjob = %name, error = %e, "unparseable schedule");
            }
            None
        }
    };
    let now_s = clock.now();
    let mut last_schedule = cj["status"]["lastScheduleTime"].clone();
    let mut wake = None;
    if let Some(schedule) = &schedule {
        let earliest = match parse_ts(&cj["status"]["lastScheduleTime"]) {
            // lastScheduleTime has second precision: snap it back onto its minute.
            Some(w) => {
                let s = clock.to_schedule(w);
                Timestamp::from_second(minute_of(s) * 60 - 1).unwrap_or(s)
            }
            None => parse_ts(&cj["metadata"]["creationTimestamp"])
                .map(|w| clock.to_schedule(w))
                .unwrap_or(now_s),
        };
        let earliest = match spec["startingDeadlineSeconds"].as_i64() {
            Some(sds) => earliest.max(
                now_s
                    .checked_sub(jiff::SignedDuration::from_secs(sds))
                    .unwrap_or(now_s),
            ),
            None => earliest,
        };
        let mut most_recent = None;
        let mut missed = 0;
        let mut t = earliest;
        while let Some(n) = schedule.next_after(t, &tz) {
            if n > now_s {
                break;
            }
            most_recent = Some(n);
            missed += 1;
            t = n;
            if missed > 100 {
                // Too many to walk one by one: jump near now.
                events.push(("Warning", "TooManyMissedTimes", "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".to_string()));
                t = now_s
                    .checked_sub(jiff::SignedDuration::from_secs(3600))
                    .unwrap_or(now_s)
                    .max(t);
                missed = 0;
            }
        }
        let suspended = spec["suspend"].as_bool() == Some(true);
        if let (Some(at), false) = (most_recent, suspended) {
            let job_name = format!("{name}-{}", minute_of(at));
            let exists = owned_jobs.iter().any(|j| name_of(j) == job_name)
                || store.get(&jobs(), Some(&ns), &job_name).is_some();
            let too_late = spec["startingDeadlineSeconds"]
                .as_i64()
                .is_some_and(|sds| now_s.duration_since(at).as_secs() > sds);
            let policy = spec["concurrencyPolicy"].as_str().unwrap_or("Allow");
            if exists {
                // Ran already.
            } else if too_late {
                events.push((
                    "Warning",
                    "MissSchedule",
                    format!(
                        "Missed scheduled time to start a job: {}",
                        at.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z")
                    ),
                ));
                last_schedule = json!(ts_rfc3339(clock.to_wall(at)));
            } else if policy == "Forbid" && !active_jobs.is_empty() {
                // Wait for the active run to end; the schedule stays due.
            } else {
                if policy == "Replace" {
                    for j in &active_jobs {
                        delete_job(store, j, &pods_of(j))?;
                        events.push((
                            "Normal",
                            "SuccessfulDelete",
                            format!("Deleted job {}", name_of(j)),
                        ));
                    }
                    active_jobs.clear();
                }
                let tpl = &spec["jobTemplate"];
                let mut meta = json!({
                    "name": job_name, "namespace": ns,
                    "labels": tpl["metadata"]["labels"].clone(),
                    "annotations": tpl["metadata"]["annotations"].clone(),
                    "ownerReferences": owner_ref(cj),
                });
                if !meta["labels"].is_object() {
                    meta["labels"] = json!({});
                }
                if !meta["annotations"].is_object() {
                    meta["annotations"] = json!({});
                }
                meta["annotations"][SCHEDULED_ANNOTATION] = json!(at
                    .to_zoned(tz.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string()
                    .replace("+00:00", "Z"));
                let mut job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": tpl["spec"].clone()});
                crate::api::workloads::default_job(&mut job);
                match store.create(&jobs(), job) {
                    Ok(j) => {
                        events.push((
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created job {job_name}"),
                        ));
                        active_jobs.push(j);
                    }
                    Err(StoreError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
                last_schedule = json!(ts_rfc3339(clock.to_wall(at)));
            }
        }
        if let Some(next) = schedule.next_after(now_s, &tz) {
            wake = Some(clock.wall_until(next) + Duration::from_millis(5));
        }
    }

    // Status.
    let refs: Vec<Value> = active_jobs.iter().map(|j| job_ref(j)).collect();
    let last_ok = last_ok.map(|t| json!(ts_rfc3339(t)));
    let r = mutate_if_exists(store, &cronjobs(), Some(&ns), &name, |o| {
        if !o["status"].is_object() {
            o["status"] = json!({});
        }
        if refs.is_empty() {
            if let Some(m) = o["status"].as_object_mut() {
                m.remove("active");
            }
        } else {
            o["status"]["active"] = json!(refs);
        }
        if last_schedule.is_string() {
            o["status"]["lastScheduleTime"] = last_schedule.clone();
        }
        if let Some(t) = &last_ok {
            o["status"]["lastSuccessfulTime"] = t.clone();
        }
        Ok(())
    })?;
    if let Some(c) = r {
        for (t, reason, msg) in events {
            record_event(store, &c, t, reason, &msg, "cronjob-controller");
        }
    }
    let _ = gone;
    Ok(wake)
}

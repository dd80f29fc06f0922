//! `linkerd trust status [--watch]`: the TrustAnchorRotation's phase and counts, followed live.

use crate::client::explain_read;
use futures::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use trust_rotation_crds::{Phase, TrustAnchorRotation, TrustAnchorRotationStatus};

/// One status line: `<time>  <phase>  bundle c/t  certificates c/t[  blocked: msg]`.
pub fn line(at: jiff::Timestamp, status: Option<&TrustAnchorRotationStatus>) -> String {
    let phase = status
        .and_then(|s| s.phase)
        .map(|p| p.to_string())
        .unwrap_or_else(|| "Pending".into());
    let count = |c: Option<&trust_rotation_crds::Convergence>| {
        c.map(|c| c.summary.clone()).unwrap_or_else(|| "-".into())
    };
    let mut s = format!(
        "{}  {phase:<27} bundle {:<9} certificates {}",
        at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        count(status.and_then(|s| s.trust_bundle.as_ref())),
        count(status.and_then(|s| s.workload_certificates.as_ref())),
    );
    if let Some(step) = status.and_then(|s| s.current_step.as_deref()) {
        s.push_str(&format!("  step {step}"));
    }
    if let Some(m) = status
        .and_then(|s| s.blocking_message.as_deref())
        .filter(|m| !m.is_empty())
    {
        s.push_str(&format!("  blocked: {m}"));
    }
    s
}

/// What a line shows, to print only changes.
fn key(status: Option<&TrustAnchorRotationStatus>) -> String {
    line(jiff::Timestamp::UNIX_EPOCH, status)
}

/// Prints the current status, and with `watch`, every change until the rotation is Synced
/// again (after having left Synced, or right away when no rotation is in progress).
pub async fn run(client: &kube::Client, name: &str, watch: bool) -> anyhow::Result<()> {
    let api: Api<TrustAnchorRotation> = Api::all(client.clone());
    let tar = trust_rotation_steps::read::rotation(client, name)
        .await
        .map_err(|e| anyhow::anyhow!(explain_read(&e.or_pass("--rotation"))))?;
    println!("{}", line(jiff::Timestamp::now(), tar.status.as_ref()));
    if !watch {
        return Ok(());
    }
    let mut last = key(tar.status.as_ref());
    let mut left_synced = is_rotating(tar.status.as_ref());
    if !left_synced && phase_of(tar.status.as_ref()) == Some(Phase::Synced) {
        eprintln!("(Synced; waiting for a rotation to start, Ctrl-C to stop)");
    }
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // Back off on errors instead of spinning (e.g. while the API server is unreachable).
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = event else {
            anyhow::bail!("the watch on TrustAnchorRotation {name} ended unexpectedly");
        };
        let obj = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
            Ok(watcher::Event::Delete(_)) => {
                anyhow::bail!("TrustAnchorRotation {name} was deleted")
            }
            Ok(_) => continue,
            Err(e) => {
                eprintln!("watch interrupted ({e}); retrying");
                continue;
            }
        };
        let status = obj.status.as_ref();
        let k = key(status);
        if k != last {
            println!("{}", line(jiff::Timestamp::now(), status));
            last = k;
        }
        if is_rotating(status) {
            left_synced = true;
        } else if left_synced && phase_of(status) == Some(Phase::Synced) {
            return Ok(());
        }
    }
}

fn phase_of(s: Option<&TrustAnchorRotationStatus>) -> Option<Phase> {
    s.and_then(|s| s.phase)
}

fn is_rotating(s: Option<&TrustAnchorRotationStatus>) -> bool {
    matches!(phase_of(s), Some(p) if p != Phase::Synced)
}

//! `trust-rotation-operator`: the binary's wiring (flags, telemetry, admin server, leader
//! election, watches). The rotation itself lives in `trust-rotation-steps`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod args;
pub mod controller;
pub mod lease;
pub mod telemetry;

use anyhow::Context as _;
use args::Args;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};
use trust_rotation_crds::{TrustAnchorRotation, CRD_NAME};
use trust_rotation_steps::metrics::Metrics;
use trust_rotation_steps::runner::RunnerConfig;
use trust_rotation_steps::step::ProbeSettings;

/// A Kubernetes client from `--kubeconfig`/`--context`, else the in-cluster config, else
/// `$KUBECONFIG`/`~/.kube/config`.
pub async fn client(args: &Args) -> anyhow::Result<kube::Client> {
    let opts = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            if !path.is_file() {
                anyhow::bail!(
                    "--kubeconfig {}: no such file (expected a kubeconfig; omit the flag to use the in-cluster config)",
                    path.display()
                );
            }
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .with_context(|| format!("loading --kubeconfig {}", path.display()))?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&opts)
            .await
            .context("loading the kubeconfig")?,
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration: not in a cluster and no kubeconfig (pass --kubeconfig)",
        )?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Refuses to start, with one line and the fix, when the CRD or cert-manager is missing.
pub async fn startup_checks(client: &kube::Client) -> anyhow::Result<()> {
    let tars: Api<TrustAnchorRotation> = Api::all(client.clone());
    match tars.list(&ListParams::default().limit(1)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => anyhow::bail!(
            "the TrustAnchorRotation CRD ({CRD_NAME}) is not installed: install it first with \
             `helm install -n linkerd trust-rotation-operator-crds <chart>` or \
             `kubectl apply -f crds/trust.linkerd.io_trustanchorrotations.yaml`"
        ),
        Err(e) => anyhow::bail!("cannot list TrustAnchorRotations ({CRD_NAME}): {e}"),
    }
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    let certs: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    match certs.list(&ListParams::default().limit(1)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => anyhow::bail!(
            "cert-manager is not installed (no certificates.cert-manager.io/v1 API): install it first with \
             `helm install cert-manager jetstack/cert-manager -n cert-manager --create-namespace --set crds.enabled=true`"
        ),
        Err(e) => warn!(error = %e, "could not verify that cert-manager is installed"),
    }
    Ok(())
}

fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "trust-rotation-operator".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the operator until SIGTERM/SIGINT (or until leadership is lost: then an error, so
/// the pod restarts and stands by).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let telemetry = telemetry::init(&args.log_level, args.log_format)?;
    let result = run_inner(&args).await;
    telemetry.shutdown().await;
    result
}

async fn run_inner(args: &Args) -> anyhow::Result<()> {
    let client = client(args).await?;
    startup_checks(&client).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let state = admin::AdminState {
        ready: ready.clone(),
        registry: Arc::new(registry),
    };
    let mut admin_stop = stop_rx.clone();
    let (bound, server) = admin::bind(args.admin_addr, state, async move {
        let _ = admin_stop.wait_for(|s| *s).await;
    })
    .await?;
    info!(addr = %bound, "admin server listening");
    let admin = tokio::spawn(server);

    let wake = Arc::new(Notify::new());
    let pods =
        controller::start_watches(&client, wake.clone(), controller::SyncTracker::new(ready))
            .await?;

    let id = identity();
    let config = RunnerConfig {
        resync: args.resync_interval,
        probe: ProbeSettings {
            mode: args.probe,
            concurrency: args.probe_concurrency.max(1),
            timeout: args.probe_timeout,
        },
        ..Default::default()
    };

    let outcome = if args.leader_election {
        let lock = lease::LeaseLock::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            id.clone(),
            args.lease_duration,
        );
        let mut stop = stop_rx.clone();
        if lock.acquire(&mut stop).await {
            let (ctl_tx, ctl_rx) = watch::channel(false);
            let holder = lock.clone();
            let mut hold_stop = stop_rx.clone();
            let lost = Arc::new(AtomicBool::new(false));
            let lost_flag = lost.clone();
            let hold = tokio::spawn(async move {
                let kept = holder.hold(&mut hold_stop).await;
                if !kept {
                    lost_flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                let _ = ctl_tx.send(true);
            });
            controller::run(client.clone(), config, metrics, pods, id, wake, ctl_rx).await;
            hold.abort();
            if lost.load(std::sync::atomic::Ordering::SeqCst) {
                Err(anyhow::anyhow!(
                    "lost the leader-election lease {}/{}; exiting so that a restart stands by",
                    args.lease_namespace,
                    args.lease_name
                ))
            } else {
                lock.release().await;
                Ok(())
            }
        } else {
            Ok(())
        }
    } else {
        controller::run(
            client.clone(),
            config,
            metrics,
            pods,
            id,
            wake,
            stop_rx.clone(),
        )
        .await;
        Ok(())
    };
    if *stop_rx.borrow() {
        let _ = admin.await;
    } else {
        admin.abort();
    }
    outcome
}

//! `trust-rotation-operator`: the binary's wiring (flags, telemetry, admin server, leader
//! election, watches). The rotation itself lives in `trust-rotation-steps`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod args;
pub mod clients;
pub mod controller;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod telemetry;

use anyhow::Context as _;
use args::Args;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use lease::{Leadership, LeaseLock, LeaseTiming};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{info, warn};
use trust_rotation_crds::{TrustAnchorRotation, CRD_NAME};
use trust_rotation_steps::metrics::Metrics;
use trust_rotation_steps::runner::RunnerConfig;
use trust_rotation_steps::step::ProbeSettings;

/// The Kubernetes configuration from `--kubeconfig`/`--context`, else the in-cluster config,
/// else `$KUBECONFIG`/`~/.kube/config`.
pub async fn kube_config(args: &Args) -> anyhow::Result<kube::Config> {
    let opts = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    Ok(match &args.kubeconfig {
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
    })
}

/// Refuses to start, with one line and the fix, when the CRD or cert-manager is missing.
pub async fn startup_checks(client: &kube::Client) -> anyhow::Result<()> {
    let tars: Api<TrustAnchorRotation> = Api::all(client.clone());
    match tars.list(&ListParams::default().limit(1)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => anyhow::bail!(
            "the TrustAnchorRotation CRD ({CRD_NAME}) is not installed: install the charts first: `{}`",
            trust_rotation_crds::operator_install_command(
                trust_rotation_crds::DEFAULT_LINKERD_NAMESPACE,
                env!("CARGO_PKG_VERSION")
            )
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

/// Runs the operator until SIGTERM/SIGINT. A replica that loses leadership cancels its
/// reconcile at once and stands by again.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let telemetry = telemetry::init(&args.log_level, args.log_format)?;
    let result = run_inner(&args).await;
    telemetry.shutdown().await;
    result
}

async fn run_inner(args: &Args) -> anyhow::Result<()> {
    let config = kube_config(args).await?;
    let watch_client = clients::watch_client(&config).context("building the Kubernetes client")?;
    startup_checks(&watch_client).await?;

    let timing = LeaseTiming::from_lease_duration(args.lease_duration);
    let leadership = if args.leader_election {
        Leadership::elected()
    } else {
        Leadership::always()
    };
    let leader_client = clients::leader_client(&config, leadership.clone())
        .context("building the Kubernetes client")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let leading: metrics::Leading = {
        let l = leadership.clone();
        Arc::new(move || l.is_leading())
    };
    let mut registry = Registry::default();
    let watch_errors = metrics::register(&mut registry, leading.clone());
    let mut leader_registry = Registry::default();
    let rotation_metrics = Metrics::register(&mut leader_registry);
    let health = health::Health::new(watch_errors);
    let ready_health = health.clone();
    let state = admin::AdminState {
        ready: Arc::new(move || ready_health.ready()),
        registry: Arc::new(registry),
        leader_registry: Arc::new(leader_registry),
        leading: leading.clone(),
    };
    let mut admin_stop = stop_rx.clone();
    let (bound, server) = admin::bind(args.admin_addr, state, async move {
        let _ = admin_stop.wait_for(|s| *s).await;
    })
    .await?;
    info!(addr = %bound, "admin server listening");
    let admin = tokio::spawn(server);

    let wake = Arc::new(controller::Wake::default());
    let pods = Arc::new(controller::PodCache::default());
    let _watches = controller::Watches::start(watch_client, wake.clone(), health, pods.clone());

    let id = identity();
    let reconciler = controller::Reconciler {
        client: leader_client,
        config: RunnerConfig {
            resync: args.resync_interval,
            probe: ProbeSettings {
                mode: args.probe,
                concurrency: usize::from(args.probe_concurrency),
                timeout: args.probe_timeout,
            },
            ..Default::default()
        },
        metrics: rotation_metrics,
        pods,
        identity: id.clone(),
        wake,
        gate: leading,
    };

    if args.leader_election {
        let lease_client = clients::lease_client(&config, timing.renew_deadline)
            .context("building the Kubernetes client")?;
        let lock = LeaseLock::new(
            lease_client,
            &args.lease_namespace,
            &args.lease_name,
            id,
            timing,
        );
        lead_while_elected(&lock, &leadership, &reconciler, stop_rx.clone()).await;
    } else {
        controller::run(&reconciler, stop_rx.clone()).await;
    }
    if *stop_rx.borrow() {
        let _ = admin.await;
    } else {
        admin.abort();
    }
    Ok(())
}

/// Stands by, leads while the Lease is ours, and stands by again when it is lost, until
/// `stop` fires.
async fn lead_while_elected(
    lock: &LeaseLock,
    leadership: &Leadership,
    reconciler: &controller::Reconciler,
    stop: watch::Receiver<bool>,
) {
    loop {
        let mut standby_stop = stop.clone();
        if !lock.acquire(leadership, &mut standby_stop).await {
            return;
        }
        let (release_tx, release_rx) = watch::channel(false);
        let hold = tokio::spawn({
            let (lock, leadership) = (lock.clone(), leadership.clone());
            async move { lock.hold(&leadership, release_rx).await }
        });
        tokio::select! {
            // SIGTERM: the reconcile in flight finished (or the drain ran out) while the
            // Lease was still renewed; only then is it given up.
            () = controller::run(reconciler, stop.clone()) => {
                let _ = release_tx.send(true);
                let _ = hold.await;
                leadership.revoke();
                lock.release().await;
                return;
            }
            // The renew deadline passed (or another replica holds the Lease): the reconcile
            // future is dropped here, mid-request if need be; the leader client sends
            // nothing more.
            () = leadership.lost() => {
                hold.abort();
                warn!(identity = %lock.identity(), "lost leadership: cancelled the reconcile in flight; standing by");
            }
        }
    }
}

//! A Kubernetes cluster simulator on loopback: an API server that kube-rs and kubectl use
//! unchanged ([`api`]), backed by an in-memory object [`store`], plus the parts of a cluster a
//! Linkerd trust rotation depends on (`mesh`): cert-manager, Deployments, the Linkerd
//! injector, identity controller and proxies, and an mTLS oracle that judges them.
//!
//! It shares no code with the product crates: its certificate checks go through
//! rustls/webpki directly.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = cluster_sim::Sim::start(cluster_sim::SimConfig::default()).await?;
//! let client = sim.client();
//! // ... use `client` (or `sim.kubeconfig_path()` with kubectl) ...
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod api;
pub mod mesh;
pub mod store;

pub use api::faults::{ErrorRule, FaultConfig, Faults};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use store::Store;

/// Which cluster to simulate and how long simulated things take: defined by the mesh.
pub use mesh::{Durations, Topology};

/// How to start a simulated cluster.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where the API server listens; port 0 picks a free one. Must be loopback.
    pub addr: SocketAddr,
    /// Where to write the kubeconfig; a temporary file when None.
    pub kubeconfig_path: Option<PathBuf>,
    pub topology: Topology,
    /// Extra meshed pods for scale runs (part 2).
    pub pods: usize,
    pub durations: Durations,
    pub faults: FaultConfig,
    /// Seed for everything random that must be reproducible (fault injection, part 2).
    pub seed: u64,
    /// Where proxies' admin-port listeners may live (helper processes for meshes beyond
    /// this process's open-file limit).
    pub listeners: mesh::listeners::ListenerConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig_path: None,
            topology: Topology::default(),
            pods: 0,
            durations: Durations::default(),
            faults: FaultConfig::default(),
            seed: 0,
            listeners: Default::default(),
        }
    }
}

/// A running simulated cluster.
pub struct Sim {
    store: Store,
    server: api::ApiServer,
    kubeconfig: PathBuf,
    /// A kubeconfig directory we created and remove on shutdown.
    temp_dir: Option<PathBuf>,
    client: kube::Client,
    mesh: mesh::MeshHandle,
}

impl Sim {
    /// Starts the API server, installs the topology, and writes the kubeconfig (atomically,
    /// only once the server answers and the topology is installed).
    pub async fn start(config: SimConfig) -> anyhow::Result<Sim> {
        use anyhow::Context;
        if !config.addr.ip().is_loopback() {
            anyhow::bail!(
                "the simulator listens only on loopback addresses (127.0.0.0/8, ::1), not {}",
                config.addr.ip()
            );
        }
        let store = Store::new();
        api::builtin::install(&store)
            .context("installing the built-in kinds and cert-manager CRDs")?;
        let mesh = install_components(&store, &config)?;
        let server = api::ApiServer::start(
            store.clone(),
            config.addr,
            config.faults.clone(),
            config.seed,
        )
        .await?;
        let oracle_metrics = mesh.clone();
        server
            .metrics()
            .add_collector(std::sync::Arc::new(move |out: &mut String| {
                out.push_str(&oracle_metrics.metrics_text())
            }));
        // Everything converged and Ready before anyone is told where the cluster is.
        let budget = std::time::Duration::from_secs(60 + config.pods as u64 / 20);
        mesh.converged(budget).await?;
        let yaml = api::tls::kubeconfig_yaml(server.addr(), server.credentials());
        let (kubeconfig, temp_dir) = match &config.kubeconfig_path {
            Some(p) => (p.clone(), None),
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "cluster-sim-{}-{}",
                    std::process::id(),
                    hex::encode(rand::random::<[u8; 6]>())
                ));
                (dir.join("kubeconfig"), Some(dir))
            }
        };
        let kc = kube::config::Kubeconfig::from_yaml(&yaml)
            .context("parsing the generated kubeconfig")?;
        let client_config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .context("loading the generated kubeconfig")?;
        let client =
            kube::Client::try_from(client_config).context("building a client for the simulator")?;
        // Serving already; check it answers before telling anyone where it is.
        client
            .apiserver_version()
            .await
            .context("the simulator's API server does not answer")?;
        api::tls::write_atomically(&kubeconfig, &yaml)?;
        Ok(Sim {
            store,
            server,
            kubeconfig,
            temp_dir,
            client,
            mesh,
        })
    }

    /// A client authenticated to this cluster (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The kubeconfig written at start (context and cluster `cluster-sim`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The mTLS oracle: would every pair of meshed pods still talk (now, minimum, dips).
    pub fn oracle(&self) -> &mesh::Oracle {
        self.mesh.oracle()
    }

    /// The simulated cluster's components (cert-manager, workloads, Linkerd).
    pub fn mesh(&self) -> &mesh::MeshHandle {
        &self.mesh
    }

    /// Live fault-injection settings.
    pub fn faults(&self) -> &Faults {
        self.server.faults()
    }

    /// The API server's request counters and `/metrics` collectors.
    pub fn metrics(&self) -> &std::sync::Arc<api::metrics::Metrics> {
        self.server.metrics()
    }

    /// Stops serving (open watches end) and removes a temporary kubeconfig.
    pub async fn shutdown(self) {
        self.mesh.shutdown().await;
        self.server.shutdown().await;
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Installs the simulated cluster's components (cert-manager, Deployments and pods,
/// Linkerd, the mTLS oracle) and starts creating `config.topology` / `config.pods`.
fn install_components(store: &Store, config: &SimConfig) -> anyhow::Result<mesh::MeshHandle> {
    let cfg = mesh::MeshConfig {
        topology: config.topology,
        pods: config.pods,
        durations: config.durations.clone(),
        seed: config.seed,
        listeners: config.listeners.clone(),
    };
    mesh::install(store, &cfg)
}

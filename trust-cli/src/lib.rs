//! `linkerd trust` (binary `linkerd-trust`): the Linkerd CLI extension that bootstraps,
//! checks and inspects trust-anchor rotation. The logic lives in `trust-rotation-steps`;
//! this crate is the command line over it.

#![forbid(unsafe_code)]

pub mod approve;
pub mod bundle;
pub mod certmanager;
pub mod check;
pub mod client;
pub mod goflags;
pub mod inspect;
pub mod names;
pub mod plan;
pub mod renew;
pub mod skip;
pub mod status;
pub mod version;

use clap::{CommandFactory, Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use trust_rotation_crds::defaults::DEFAULT_LINKERD_NAMESPACE;

/// What `_extension-metadata` prints: `linkerd check` runs our checks because of it.
pub const EXTENSION_METADATA: &str = r#"{"name":"linkerd-trust","checks":"always"}"#;

#[derive(Debug, Parser)]
#[command(
    name = "linkerd-trust",
    bin_name = "linkerd trust",
    version,
    about = "Bootstrap, check and inspect Linkerd trust-anchor rotation",
    long_about = "linkerd trust manages the trust-rotation operator's side of a Linkerd mesh: it seeds \
                  the trust bundle, checks cert-manager, the Linkerd PKI and the operator, and shows \
                  where a rotation is and which pods have not converged."
)]
pub struct Cli {
    #[command(flatten)]
    pub client: client::ClientArgs,
    /// Namespace of the Linkerd control plane
    #[arg(short = 'L', long, global = true, default_value = DEFAULT_LINKERD_NAMESPACE, value_name = "NS")]
    pub linkerd_namespace: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Let a rotation parked at an approval point (spec.automation.approvals) go on: writes the
    /// annotation trust.linkerd.io/approve: <STEP>@<rotation id> on the TrustAnchorRotation,
    /// good for the rotation in progress only
    Approve(ApproveArgs),
    /// Render the trust-roots ConfigMap from cert-manager's trust-anchor Secret
    /// (`linkerd trust bundle | kubectl apply -f -`); safe to re-run: mid-rotation it keeps
    /// the roots the rotation still needs, and it refuses a bundle that would break mTLS
    Bundle(BundleArgs),
    /// Check cert-manager, the Linkerd PKI, the trust bundle and the operator
    Check(check::CheckArgs),
    /// Show the rotation's phase and the meshed pods that have not converged
    Inspect(inspect::InspectArgs),
    /// Show what the next (or current) rotation does before it does it: the anchor and issuer,
    /// every meshed workload in the order the operator restarts it and why some are not, what
    /// a person must do, and an estimated duration
    #[command(long_about = plan::LONG_ABOUT)]
    Plan(plan::PlanArgs),
    /// Trigger cert-manager to re-issue the trust anchor or the identity issuer (like `cmctl renew`);
    /// refuses the anchor while a rotation is in progress, and the issuer before the rotation
    /// reaches WaitingForIdentityRotation, unless --force
    Renew(RenewArgs),
    /// Let the operator's automatic workload restarts (spec.automation.workloadRestarts) leave a
    /// workload alone in the rotation in progress, e.g. one whose rollout does not progress:
    /// writes the annotation trust.linkerd.io/skip: <ns>/<kind>/<name>@<rotation id>; its pods
    /// still hold the rotation until you replace them
    Skip(SkipArgs),
    /// Show the TrustAnchorRotation's phase and counts; follow it with --watch
    Status(StatusArgs),
    /// Print the client and operator versions
    Version(VersionArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Extension metadata for `linkerd check`
    #[command(name = "_extension-metadata", hide = true)]
    ExtensionMetadata,
}

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// Output format of the manifest
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: bundle::ManifestFormat,
    /// Print the plan (each root kept, added or removed, and why) instead of the manifest
    #[arg(long)]
    pub dry_run: bool,
    /// Print the manifest even when it would drop a root the mesh still needs
    #[arg(long)]
    pub force: bool,
    /// The TrustAnchorRotation whose rotation in progress the bundle must keep whole
    #[arg(long, default_value = trust_rotation_crds::DEFAULT_ROTATION_NAME, value_name = "NAME")]
    pub rotation: String,
    #[command(flatten)]
    pub names: names::PkiNames,
}

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// What to approve: IssuerRenewal (re-issuing the identity issuer from the new anchor) or
    /// RootRemoval (removing the old anchor from the trust bundle)
    #[arg(value_parser = approve::parse_gate, value_name = "STEP")]
    pub step: trust_rotation_crds::ApprovalGate,
    /// The TrustAnchorRotation to approve on
    #[arg(long, default_value = trust_rotation_crds::DEFAULT_ROTATION_NAME, value_name = "NAME")]
    pub rotation: String,
    /// The rotation id the approval is for (default: the rotation in progress,
    /// .status.rotation.id)
    #[arg(long, value_name = "ID")]
    pub rotation_id: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct SkipArgs {
    /// The workload, as KIND/NAME: deploy/web, statefulset/db, ds/agent
    #[arg(value_parser = skip::parse_workload, value_name = "KIND/NAME")]
    pub workload: (String, String),
    /// The workload's namespace
    #[arg(short = 'n', long, value_name = "NS", default_value = "default")]
    pub namespace: String,
    /// The TrustAnchorRotation to annotate
    #[arg(long, default_value = trust_rotation_crds::DEFAULT_ROTATION_NAME, value_name = "NAME")]
    pub rotation: String,
}

#[derive(Debug, clap::Args)]
pub struct RenewArgs {
    #[arg(value_enum)]
    pub target: renew::Target,
    /// Renew even when the rotation in progress is not ready for it (the anchor while a rotation
    /// is in progress, the issuer before WaitingForIdentityRotation)
    #[arg(long)]
    pub force: bool,
    /// The TrustAnchorRotation whose progress decides whether renewing is safe
    #[arg(long, default_value = trust_rotation_crds::DEFAULT_ROTATION_NAME, value_name = "NAME")]
    pub rotation: String,
    #[command(flatten)]
    pub names: names::PkiNames,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Follow the rotation until it is Synced again (Ctrl-C to stop)
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// The TrustAnchorRotation to read
    #[arg(long, default_value = trust_rotation_crds::DEFAULT_ROTATION_NAME, value_name = "NAME")]
    pub rotation: String,
}

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Print the client version only (no cluster access)
    #[arg(long)]
    pub client: bool,
    #[command(flatten)]
    pub operator: names::OperatorNames,
}

/// Writes to stdout; a closed pipe (e.g. `| head`) is not an error worth a message.
fn out(s: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(s.as_bytes());
    let _ = stdout.flush();
}

/// Runs the parsed command. Errors are returned as one line for `main` to print.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ns = cli.linkerd_namespace.clone();
    match cli.command {
        Command::ExtensionMetadata => {
            out(&format!("{EXTENSION_METADATA}\n"));
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "linkerd-trust", &mut buf);
            out(&String::from_utf8_lossy(&buf));
        }
        Command::Bundle(args) => {
            let client = cli.client.client().await?;
            let inputs = bundle::read_inputs(&client, &args.names, &ns, &args.rotation).await?;
            for w in &inputs.warnings {
                eprintln!("Warning: {w}");
            }
            let plan = inputs.plan();
            let configmap = format!("{ns}/{}", args.names.trust_roots);
            if args.dry_run {
                out(&bundle::render_plan(&plan, &configmap));
                return Ok(if plan.refusals.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            if !plan.refusals.is_empty() {
                if !args.force {
                    return Err(bundle::refusal(&plan));
                }
                for r in &plan.refusals {
                    eprintln!("Warning (--force): {r}");
                }
            }
            if plan.rotation.is_some() || plan.roots.iter().any(|r| r.present && !r.kept) {
                // The manifest differs from "the anchor alone": say why, where a pipe does not
                // carry it.
                eprint!("{}", bundle::render_plan(&plan, &configmap));
            }
            out(&bundle::render_manifest(
                &plan.bundle,
                &args.names.trust_roots,
                &ns,
                &args.names.trust_roots_key,
                args.output,
            )?);
        }
        Command::Check(args) => return Ok(run_check(cli.client, ns, args).await),
        Command::Inspect(args) => {
            let client = cli.client.client().await?;
            let report = inspect::inspect(&client, &ns, &args).await?;
            out(&inspect::render(&report, args.output)?);
        }
        Command::Plan(args) => {
            let client = cli.client.client().await?;
            let p = plan::plan(&client, &ns, &args.rotation).await?;
            out(&plan::render(&p, args.output)?);
        }
        Command::Approve(args) => {
            let client = cli.client.client().await?;
            out(&approve::run(
                &client,
                &args.rotation,
                args.step,
                args.rotation_id.as_deref(),
            )
            .await?);
        }
        Command::Skip(args) => {
            let client = cli.client.client().await?;
            out(&skip::run(&client, &args.rotation, &args.workload, &args.namespace).await?);
        }
        Command::Renew(args) => {
            let client = cli.client.client().await?;
            out(&renew::run(
                &client,
                &ns,
                &args.names,
                args.target,
                &args.rotation,
                args.force,
            )
            .await?);
        }
        Command::Status(args) => {
            let client = cli.client.client().await?;
            status::run(&client, &args.rotation, args.watch).await?;
        }
        Command::Version(args) => {
            out(&format!("Client version: {}\n", version::CLIENT_VERSION));
            if !args.client {
                let v = match cli.client.client().await {
                    Ok(client) => {
                        let op_ns = args.operator.namespace(&ns).to_string();
                        version::operator_version(
                            &client,
                            &op_ns,
                            &args.operator.operator_deployment,
                        )
                        .await
                    }
                    Err(e) => format!("unavailable ({e:#})"),
                };
                out(&format!("Operator version: {v}\n"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_check(client: client::ClientArgs, ns: String, args: check::CheckArgs) -> ExitCode {
    use check::format::{render_json, CheckOutput, Symbols, TextPrinter};
    let plan = check::plan(args.pre, args.fail_within);
    let mut ctx = check::Ctx::new(client, ns, &args);
    ctx.set_retry_notice(args.output != CheckOutput::Json && std::io::stderr().is_terminal());
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let sym = Symbols { color };
    let results = match args.output {
        CheckOutput::Json => {
            let results = check::run_checks(&mut ctx, &plan, args.wait, |_| {}).await;
            out(&render_json(&results));
            results
        }
        CheckOutput::Table | CheckOutput::Short => {
            let mut printer = TextPrinter::new(args.output == CheckOutput::Short, sym);
            let results =
                check::run_checks(&mut ctx, &plan, args.wait, |r| out(&printer.observe(r))).await;
            out(&printer.finish());
            results
        }
    };
    if check::format::summary(&results).0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

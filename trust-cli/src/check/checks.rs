//! One function per check of [`super::CHECKS`]. Each reads what it needs through the context
//! (the shared read layer, cached per run) and concludes with a [`Verdict`].

use super::{Ctx, Verdict, ANCHOR_WARN_WITHIN};
use crate::certmanager;
use crate::client::{explain, explain_read, is_not_found};
use jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use trust_rotation_crds::TrustAnchorRotation;
use trust_rotation_steps::pki::{short_fingerprint, verify_chain, Certificate};
use trust_rotation_steps::read::{self, ReadError, TrustBundle};

type Run<'a> = Pin<Box<dyn Future<Output = Verdict> + 'a>>;

/// Early return of a verdict from a `Result` whose error is the verdict.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(verdict) => return verdict,
        }
    };
}

impl Ctx {
    fn kube(&self) -> Result<&kube::Client, Verdict> {
        self.client
            .get()
            .ok_or_else(|| Verdict::Fail("the Kubernetes client is not initialized".to_string()))
    }

    fn dynamic(&self, ar: &ApiResource, ns: Option<&str>) -> Result<Api<DynamicObject>, Verdict> {
        let c = self.kube()?.clone();
        Ok(match ns {
            Some(ns) => Api::namespaced_with(c, ns, ar),
            None => Api::all_with(c, ar),
        })
    }

    /// A cert-manager object; `Missing` (not retried) when it does not exist.
    async fn cert_manager_object(
        &self,
        ar: &ApiResource,
        ns: Option<&str>,
        name: &str,
        missing_hint: &str,
    ) -> Result<DynamicObject, Verdict> {
        let what = match ns {
            Some(ns) => format!("{} {ns}/{name}", ar.kind),
            None => format!("{} {name}", ar.kind),
        };
        self.dynamic(ar, ns)?.get(name).await.map_err(|e| {
            if is_not_found(&e) {
                Verdict::Missing(format!("{what} not found: {missing_hint}"))
            } else {
                Verdict::Fail(explain(&e, &format!("reading {what}")))
            }
        })
    }

    async fn anchor_certificate(&self) -> Result<DynamicObject, Verdict> {
        self.cert_manager_object(
            &certmanager::certificate(),
            Some(&self.names.cert_manager_namespace),
            &self.names.trust_anchor,
            "install the linkerd-cert-manager chart (or pass --trust-anchor)",
        )
        .await
    }

    async fn anchor(&self) -> Result<&Certificate, Verdict> {
        let client = self.kube()?;
        self.anchor
            .get_or_init(|| async {
                read::anchor(client, &self.names.anchor_ref())
                    .await
                    .map_err(|e| e.or_pass("--trust-anchor-secret"))
            })
            .await
            .as_ref()
            .map_err(Verdict::from)
    }

    async fn issuer_chain(&self) -> Result<&[Certificate], Verdict> {
        let client = self.kube()?;
        self.issuer_chain
            .get_or_init(|| async {
                read::issuer_chain(client, &self.names.issuer_ref(&self.linkerd_ns))
                    .await
                    .map_err(|e| e.or_pass("--identity-issuer-secret"))
            })
            .await
            .as_deref()
            .map_err(Verdict::from)
    }

    async fn issuer(&self) -> Result<&Certificate, Verdict> {
        Ok(&self.issuer_chain().await?[0])
    }

    async fn trust_bundle(&self) -> Result<&Result<TrustBundle, ReadError>, Verdict> {
        let client = self.kube()?;
        Ok(self
            .trust_bundle
            .get_or_init(|| async {
                read::trust_bundle(client, &self.names.roots_ref(&self.linkerd_ns))
                    .await
                    .map_err(|e| e.or_pass("--trust-roots"))
            })
            .await)
    }

    async fn bundle(&self) -> Result<&TrustBundle, Verdict> {
        self.trust_bundle().await?.as_ref().map_err(Verdict::from)
    }

    async fn rotation(&self) -> Result<&TrustAnchorRotation, Verdict> {
        let client = self.kube()?;
        self.rotation
            .get_or_init(|| async {
                read::rotation(client, &self.op.rotation)
                    .await
                    .map_err(|e| e.or_pass("--rotation"))
            })
            .await
            .as_ref()
            .map_err(Verdict::from)
    }
}

pub(super) fn client_init(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        match ctx.client_args.client().await {
            Ok(client) => {
                // A second initialisation keeps the first client.
                let _ = ctx.client.set(client);
                Verdict::Pass
            }
            Err(e) => Verdict::Fail(format!("{e:#}")),
        }
    })
}

pub(super) fn api_query(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let client = need!(ctx.kube());
        Verdict::of(
            client
                .apiserver_version()
                .await
                .map(|_| ())
                .map_err(|e| explain(&e, "querying the Kubernetes API")),
        )
    })
}

pub(super) fn cert_manager_crds(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let api = need!(ctx.dynamic(&certmanager::certificate(), None));
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => Verdict::Pass,
            Err(e) if is_not_found(&e) => Verdict::Fail(
                "the cert-manager CRDs (certificates.cert-manager.io) are not installed: \
                 install cert-manager with crds.enabled=true"
                    .into(),
            ),
            Err(e) => Verdict::Fail(explain(&e, "listing cert-manager Certificates")),
        }
    })
}

pub(super) fn cert_manager_available(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let cm_ns = &ctx.names.cert_manager_namespace;
        let list = match read::deployments(need!(ctx.kube()), cm_ns).await {
            Ok(l) => l,
            Err(e) => return Verdict::from(&e),
        };
        // No Deployment yet is retried: cert-manager may be being installed right now.
        if list.is_empty() {
            return Verdict::Fail(format!(
                "no Deployments in namespace {cm_ns}: install cert-manager there (or pass --cert-manager-namespace)"
            ));
        }
        let unavailable: Vec<&str> = list
            .iter()
            .filter(|d| !d.rollout_complete())
            .map(|d| d.name.as_str())
            .collect();
        if unavailable.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail(format!(
                "not available in {cm_ns}: {}",
                unavailable.join(", ")
            ))
        }
    })
}

pub(super) fn root_issuer_ready(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let cm_ns = &ctx.names.cert_manager_namespace;
        let name = &ctx.names.trust_root_issuer;
        let obj = need!(
            ctx.cert_manager_object(
                &certmanager::issuer(),
                Some(cm_ns),
                name,
                "install the linkerd-cert-manager chart (or pass --trust-root-issuer)",
            )
            .await
        );
        Verdict::of(certmanager::ready(&obj, &format!("Issuer {cm_ns}/{name}")))
    })
}

pub(super) fn anchor_certificate_ready(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let obj = need!(ctx.anchor_certificate().await);
        Verdict::of(certmanager::ready(
            &obj,
            &format!(
                "Certificate {}/{}",
                ctx.names.cert_manager_namespace, ctx.names.trust_anchor
            ),
        ))
    })
}

pub(super) fn anchor_rotation_policy(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let obj = need!(ctx.anchor_certificate().await);
        let policy = obj
            .data
            .pointer("/spec/privateKey/rotationPolicy")
            .and_then(|v| v.as_str())
            .unwrap_or("Never (unset)");
        if policy == "Always" {
            Verdict::Pass
        } else {
            Verdict::Fail(format!(
                "Certificate {}/{} has privateKey.rotationPolicy {policy}: a renewed anchor \
                 keeps its key; set it to Always",
                ctx.names.cert_manager_namespace, ctx.names.trust_anchor
            ))
        }
    })
}

pub(super) fn cluster_issuer_ready(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let name = &ctx.names.identity_cluster_issuer;
        let obj = need!(
            ctx.cert_manager_object(
                &certmanager::cluster_issuer(),
                None,
                name,
                "install the linkerd-cert-manager chart (or pass --identity-cluster-issuer)",
            )
            .await
        );
        Verdict::of(certmanager::ready(&obj, &format!("ClusterIssuer {name}")))
    })
}

pub(super) fn issuer_certificate_ready(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let ns = &ctx.linkerd_ns;
        let name = &ctx.names.identity_issuer;
        let obj = need!(
            ctx.cert_manager_object(
                &certmanager::certificate(),
                Some(ns),
                name,
                "install the linkerd-cert-manager chart (or pass --identity-issuer)",
            )
            .await
        );
        Verdict::of(certmanager::ready(
            &obj,
            &format!("Certificate {ns}/{name}"),
        ))
    })
}

pub(super) fn anchor_is_ca(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let a = need!(ctx.anchor().await);
        if a.is_ca() {
            Verdict::Pass
        } else {
            Verdict::Fail(format!(
                "the trust anchor {} is not a CA (basicConstraints CA:FALSE or missing); set isCA: true on the Certificate",
                a.subject()
            ))
        }
    })
}

pub(super) fn anchor_algorithm(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let a = need!(ctx.anchor().await);
        if a.key_algorithm().is_supported_for_anchor() {
            Verdict::Pass
        } else {
            Verdict::Fail(format!(
                "the trust anchor uses {}; Linkerd supports ECDSA P-256/P-384 and RSA ≥ 2048",
                a.key_algorithm()
            ))
        }
    })
}

pub(super) fn anchor_time_valid(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let a = need!(ctx.anchor().await);
        Verdict::of(time_valid(a, ctx.now, "trust anchor"))
    })
}

pub(super) fn anchor_not_expiring_soon(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let a = need!(ctx.anchor().await);
        Verdict::of(expiring(a, ctx.now, ANCHOR_WARN_WITHIN, "trust anchor"))
    })
}

pub(super) fn anchor_fail_within(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let a = need!(ctx.anchor().await);
        let within = ctx.fail_within.unwrap_or(ANCHOR_WARN_WITHIN);
        Verdict::of(expiring(a, ctx.now, within, "trust anchor"))
    })
}

pub(super) fn issuer_algorithm(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let issuer = need!(ctx.issuer().await);
        if issuer.key_algorithm().is_ecdsa_p256() {
            Verdict::Pass
        } else {
            Verdict::Fail(format!(
                "the identity issuer uses {}; Linkerd requires ECDSA P-256 (privateKey.algorithm: ECDSA, size: 256)",
                issuer.key_algorithm()
            ))
        }
    })
}

pub(super) fn issuer_time_valid(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let issuer = need!(ctx.issuer().await);
        Verdict::of(time_valid(issuer, ctx.now, "issuer certificate"))
    })
}

pub(super) fn issuer_in_bundle(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let chain = need!(ctx.issuer_chain().await);
        let bundle = need!(ctx.bundle().await);
        match verify_chain(chain, bundle.bundle.certs(), None) {
            Ok(_) => Verdict::Pass,
            Err(e) => Verdict::Fail(format!(
                "the identity issuer does not chain to any root in {}/{} ({e}); proxies would reject its certificates",
                ctx.linkerd_ns, ctx.names.trust_roots
            )),
        }
    })
}

pub(super) fn trust_roots_exist(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        match need!(ctx.trust_bundle().await) {
            // It exists: whether it is valid is the next check's business.
            Ok(_) | Err(ReadError::Invalid { .. }) => Verdict::Pass,
            Err(e) => Verdict::from(e),
        }
    })
}

pub(super) fn trust_roots_valid(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        need!(ctx.bundle().await);
        Verdict::Pass
    })
}

pub(super) fn trust_roots_include_anchor(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let anchor = need!(ctx.anchor().await);
        let bundle = &need!(ctx.bundle().await).bundle;
        if bundle.contains(anchor.fingerprint()) {
            Verdict::Pass
        } else {
            Verdict::Fail(format!(
                "the bundle ({} root(s)) lacks the current trust anchor {}; the operator adds it during a rotation, \
                 or re-seed with `{}`",
                bundle.len(),
                short_fingerprint(anchor.fingerprint()),
                read::SEED_BUNDLE_COMMAND
            ))
        }
    })
}

pub(super) fn trust_roots_unowned(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let target = &ctx.names.trust_roots;
        let api = need!(ctx.dynamic(&certmanager::trust_manager_bundle(), None));
        let bundles = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) if is_not_found(&e) => Vec::new(), // trust-manager is not installed
            Err(e) => return Verdict::Fail(explain(&e, "listing trust-manager Bundles")),
        };
        // The operator's predicate, fed with what the CLI can see: the ConfigMap's own
        // metadata (judged when it was read) and the Bundles.
        let from_configmap = match need!(ctx.trust_bundle().await) {
            Ok(b) => b.owner.clone(),
            Err(_) => None,
        };
        match from_configmap.or_else(|| read::bundle_owner(target, None, &bundles)) {
            None => Verdict::Pass,
            Some(owner) => Verdict::Fail(format!(
                "{} manages ConfigMap {target} and would overwrite the operator's changes, so the \
                 operator will not start a rotation: {}",
                owner.who, owner.fix
            )),
        }
    })
}

/// How to install the operator, for the "not installed yet" warning.
fn install_command(ns: &str) -> String {
    trust_rotation_crds::operator_install_command(ns, crate::version::CLIENT_VERSION)
}

pub(super) fn crd_installed(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        match read::rotation_crd_installed(need!(ctx.kube())).await {
            Ok(true) => Verdict::Pass,
            // During installation (the guide runs `linkerd check` after Linkerd and before
            // the operator) this is expected: a warning, like an extension not installed yet.
            Ok(false) => Verdict::NotInstalled(format!(
                "the trust-rotation operator is not installed yet (no {} CRD). It can be installed by running `{}`",
                trust_rotation_crds::CRD_NAME,
                install_command(ctx.op.namespace(&ctx.linkerd_ns))
            )),
            Err(e) => Verdict::Fail(explain_read(&e)),
        }
    })
}

pub(super) fn operator_available(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let ns = ctx.op.namespace(&ctx.linkerd_ns);
        let name = &ctx.op.operator_deployment;
        match read::deployment(need!(ctx.kube()), ns, name).await {
            Ok(d) if d.rollout_complete() => Verdict::Pass,
            Ok(d) => Verdict::Fail(format!(
                "Deployment {ns}/{name} is not available ({}); see `kubectl -n {ns} describe deployment {name}`",
                d.progress()
            )),
            Err(e) => Verdict::from(
                &e.with_missing_fix("install the trust-rotation-operator chart")
                    .or_pass("--operator-namespace/--operator-deployment"),
            ),
        }
    })
}

pub(super) fn rotation_exists(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        need!(ctx.rotation().await);
        Verdict::Pass
    })
}

pub(super) fn rotation_not_blocked(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let tar = need!(ctx.rotation().await);
        let status = tar.status.as_ref();
        match status
            .and_then(|s| s.blocking_message.as_deref())
            .filter(|m| !m.is_empty())
        {
            None => Verdict::Pass,
            Some(m) => Verdict::Fail(format!(
                "blocked in phase {}: {m}",
                status
                    .and_then(|s| s.phase)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "unknown".into())
            )),
        }
    })
}

pub(super) fn rotation_not_paused(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let tar = need!(ctx.rotation().await);
        if tar.spec.paused {
            Verdict::Fail(format!(
                "TrustAnchorRotation {} is paused: the operator will not act until spec.paused is false",
                ctx.op.rotation
            ))
        } else {
            Verdict::Pass
        }
    })
}

fn time_valid(c: &Certificate, now: Timestamp, what: &str) -> Result<(), String> {
    if now < c.not_before() {
        Err(format!("the {what} is not valid before {}", c.not_before()))
    } else if now > c.not_after() {
        Err(format!("the {what} expired at {}", c.not_after()))
    } else {
        Ok(())
    }
}

fn expiring(c: &Certificate, now: Timestamp, within: Duration, what: &str) -> Result<(), String> {
    let left = c.not_after().as_second() - now.as_second();
    if left >= within.as_secs() as i64 {
        Ok(())
    } else {
        let days = left.max(0) / 86_400;
        Err(format!(
            "the {what} expires at {} ({days} days from now); renew it with `linkerd trust renew anchor`",
            c.not_after()
        ))
    }
}

//! Custom resources validated as a real API server validates them: structural-schema
//! errors as `422 Invalid` Statuses, pruning and defaulting, `fieldValidation`
//! (`Strict`/`Warn`/`Ignore`) and server-side apply's undeclared fields, the status schema,
//! CEL rules (message, messageExpression, reason, fieldPath, transition rules), ratcheting,
//! the `Warning` headers of CRD writes, and cert-manager's real schemas.

#![recursion_limit = "256"]

use cluster_sim::{Sim, SimConfig};
use http_body_util::BodyExt;
use serde_json::{json, Value};

async fn sim() -> Sim {
    Sim::start(SimConfig::default())
        .await
        .unwrap_or_else(|e| panic!("starting the simulator: {e:#}"))
}

/// A response as a client sees it: status code, `Warning` texts, JSON body.
struct Answer {
    code: u16,
    warnings: Vec<String>,
    body: Value,
}

impl Answer {
    /// The Status's cause messages, as `field: message` lines, sorted (a real server's
    /// order follows Go map iteration, so tests do not depend on it).
    fn causes(&self) -> Vec<String> {
        let mut out: Vec<String> = self.body["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["field"].as_str().unwrap_or(""),
                    c["message"].as_str().unwrap_or("")
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// The text of a `Warning: 299 - "<text>"` header.
fn warning_text(h: &str) -> String {
    let quoted = h.split_once(" - ").map_or(h, |(_, q)| q);
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(quoted);
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &Value,
) -> Answer {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(serde_json::to_vec(body).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let code = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(warning_text)
        .collect();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        code,
        warnings,
        body,
    }
}

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "x-kubernetes-validations": [{
                        "rule": "self.metadata.name.startsWith('w-')",
                        "message": "widget names start with w-",
                        "reason": "FieldValueForbidden",
                    }],
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "x-kubernetes-validations": [{
                                "rule": "self.minReplicas <= self.maxReplicas",
                                "messageExpression": "'minReplicas (' + string(self.minReplicas) + ') must not exceed maxReplicas (' + string(self.maxReplicas) + ')'",
                                "fieldPath": ".minReplicas",
                            }],
                            "properties": {
                                "size": {"type": "string", "enum": ["S", "M", "L"]},
                                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                                "minReplicas": {"type": "integer", "format": "int32", "minimum": 0, "default": 1},
                                "maxReplicas": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 10, "default": 3},
                                "color": {"type": "string", "default": "blue"},
                                "mode": {"type": "string", "x-kubernetes-validations": [
                                    {"rule": "self == oldSelf", "message": "mode is immutable"}
                                ]},
                                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "maxItems": 3},
                                "ports": {
                                    "type": "array",
                                    "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": ["name"],
                                    "items": {"type": "object", "required": ["name"], "properties": {
                                        "name": {"type": "string"}, "port": {"type": "integer"}
                                    }},
                                },
                                "startAt": {"type": "string", "format": "date-time"},
                                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                "legacy": {"type": "string"},
                            },
                        },
                        "status": {"type": "object", "properties": {
                            "phase": {"type": "string", "enum": ["Pending", "Ready"]},
                            "count": {"type": "integer", "minimum": 0},
                        }},
                    },
                }},
            }],
        },
    })
}

fn widget(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})
}

async fn with_widgets() -> (Sim, kube::Client) {
    let sim = sim().await;
    let client = sim.client();
    let a = send(&client, "POST", CRDS, "application/json", &widget_crd()).await;
    assert_eq!(a.code, 201, "creating the CRD: {}", a.body);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    (sim, client)
}

#[tokio::test]
async fn schema_violations_are_422_invalid_statuses_with_a_real_servers_causes() {
    let (sim, client) = with_widgets().await;
    let bad = widget(
        "w-bad",
        json!({"size": "XL", "name": "ABC", "minReplicas": -1, "maxReplicas": "three",
               "startAt": "soon", "tags": ["a", "a"], "ports": [{"name": "http"}, {"name": "http", "port": 2}]}),
    );
    let a = send(&client, "POST", WIDGETS, "application/json", &bad).await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(a.body["kind"], "Status");
    assert_eq!(a.body["reason"], "Invalid");
    assert_eq!(a.body["details"]["name"], "w-bad");
    assert_eq!(a.body["details"]["group"], "example.com");
    assert_eq!(a.body["details"]["kind"], "Widget");
    assert_eq!(
        a.causes(),
        [
            "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            "spec.maxReplicas: Invalid value: \"string\": spec.maxReplicas in body must be of type integer: \"string\"",
            "spec.minReplicas: Invalid value: -1: spec.minReplicas in body should be greater than or equal to 0",
            "spec.name: Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'",
            "spec.ports[1]: Duplicate value: {\"name\":\"http\"}",
            "spec.size: Unsupported value: \"XL\": supported values: \"S\", \"M\", \"L\"",
            "spec.startAt: Invalid value: \"soon\": spec.startAt in body must be of type date-time: \"soon\"",
            "spec.tags[1]: Duplicate value: \"a\"",
        ]
    );
    let message = a.body["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("Widget.example.com \"w-bad\" is invalid: [")
            && message.contains("spec.size: Unsupported value: \"XL\""),
        "{message}"
    );
    // Reasons are the field error types.
    let reasons: Vec<&str> = a.body["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    for r in [
        "FieldValueNotSupported",
        "FieldValueTypeInvalid",
        "FieldValueInvalid",
        "FieldValueDuplicate",
    ] {
        assert!(reasons.contains(&r), "{reasons:?}");
    }

    // Required fields, lengths and item counts.
    let a = send(
        &client,
        "POST",
        WIDGETS,
        "application/json",
        &widget(
            "w-bad",
            json!({"name": "abcdefghij", "tags": ["a", "b", "c", "d"]}),
        ),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(
        a.causes(),
        [
            "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            "spec.name: Too long: may not be more than 8 bytes",
            "spec.size: Required value",
            "spec.tags: Too many: 4: must have at most 3 items",
        ]
    );
    // Nothing invalid was stored.
    let a = send(
        &client,
        "GET",
        &format!("{WIDGETS}/w-bad"),
        "application/json",
        &Value::Null,
    )
    .await;
    assert_eq!(a.code, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn cel_rules_report_their_message_reason_and_field_path_and_transition_rules_need_an_old_value(
) {
    let (sim, client) = with_widgets().await;
    let a = send(
        &client,
        "POST",
        WIDGETS,
        "application/json",
        &widget(
            "x-1",
            json!({"size": "S", "minReplicas": 5, "maxReplicas": 3}),
        ),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(
        a.causes(),
        [
            "<nil>: Forbidden: widget names start with w-",
            "spec.minReplicas: Invalid value: minReplicas (5) must not exceed maxReplicas (3)",
        ]
    );
    let reasons: Vec<&str> = a.body["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"FieldValueForbidden"), "{reasons:?}");

    // A transition rule does not run on create, and holds on update.
    let a = send(
        &client,
        "POST",
        WIDGETS,
        "application/json",
        &widget("w-1", json!({"size": "S", "mode": "fast"})),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    // Schema defaults were applied.
    assert_eq!(a.body["spec"]["color"], "blue");
    assert_eq!(a.body["spec"]["minReplicas"], 1);
    assert_eq!(a.body["spec"]["maxReplicas"], 3);
    let a = send(
        &client,
        "PATCH",
        &format!("{WIDGETS}/w-1"),
        "application/merge-patch+json",
        &json!({"spec": {"mode": "slow"}}),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(
        a.causes(),
        ["spec.mode: Invalid value: \"slow\": mode is immutable"]
    );
    let a = send(
        &client,
        "PATCH",
        &format!("{WIDGETS}/w-1"),
        "application/merge-patch+json",
        &json!({"spec": {"size": "M"}}),
    )
    .await;
    assert_eq!(a.code, 200, "an unrelated change passes: {}", a.body);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_fields_are_pruned_warned_about_or_refused_as_the_client_asks() {
    let (sim, client) = with_widgets().await;
    let with_unknown = |name: &str| {
        let mut w = widget(
            name,
            json!({"size": "S", "bogus": 1, "extra": {"free": {"form": true}}}),
        );
        w["metadata"]["clusterName"] = json!("old");
        w
    };
    // Warn, the default: stored without the unknown fields, one warning each.
    let a = send(
        &client,
        "POST",
        WIDGETS,
        "application/json",
        &with_unknown("w-warn"),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(
        a.warnings,
        [
            "unknown field \"metadata.clusterName\"",
            "unknown field \"spec.bogus\""
        ]
    );
    assert!(a.body["spec"].get("bogus").is_none());
    assert_eq!(
        a.body["spec"]["extra"]["free"]["form"], true,
        "preserve-unknown-fields keeps its content"
    );
    // Ignore: pruned silently.
    let a = send(
        &client,
        "POST",
        &format!("{WIDGETS}?fieldValidation=Ignore"),
        "application/json",
        &with_unknown("w-ignore"),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert!(a.body["spec"].get("bogus").is_none());
    // Strict: a create is 400, as kubectl shows it.
    let a = send(
        &client,
        "POST",
        &format!("{WIDGETS}?fieldValidation=Strict"),
        "application/json",
        &with_unknown("w-strict"),
    )
    .await;
    assert_eq!(
        (a.code, a.body["reason"].as_str()),
        (400, Some("BadRequest")),
        "{}",
        a.body
    );
    assert_eq!(
        a.body["message"],
        "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"metadata.clusterName\", unknown field \"spec.bogus\""
    );
    // Strict on a merge patch: 422 naming the patched object, as a real server does.
    let a = send(
        &client,
        "PATCH",
        &format!("{WIDGETS}/w-warn?fieldValidation=Strict"),
        "application/merge-patch+json",
        &json!({"spec": {"bogus": 2}}),
    )
    .await;
    assert_eq!(
        (a.code, a.body["reason"].as_str()),
        (422, Some("Invalid")),
        "{}",
        a.body
    );
    let message = a.body["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with(" \"\" is invalid: patch: Invalid value: \"{")
            && message.ends_with("strict decoding error: unknown field \"spec.bogus\""),
        "{message}"
    );
    // Warn on an update: pruned, warned.
    let a = send(
        &client,
        "PATCH",
        &format!("{WIDGETS}/w-warn"),
        "application/merge-patch+json",
        &json!({"spec": {"bogus": 2, "color": "red"}}),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.warnings, ["unknown field \"spec.bogus\""]);
    assert_eq!(a.body["spec"]["color"], "red");
    // Server-side apply types the configuration first: an undeclared field fails it,
    // whatever the directive.
    let a = send(
        &client,
        "PATCH",
        &format!("{WIDGETS}/w-warn?fieldManager=me&fieldValidation=Ignore"),
        "application/apply-patch+yaml",
        &widget("w-warn", json!({"size": "S", "bogus": 3})),
    )
    .await;
    assert_eq!(a.code, 500, "{}", a.body);
    assert_eq!(
        a.body["message"],
        "failed to create typed patch object (default/w-warn; example.com/v1, Kind=Widget): .spec.bogus: field not declared in schema"
    );
    // A bad directive is refused.
    let a = send(
        &client,
        "POST",
        &format!("{WIDGETS}?fieldValidation=Loose"),
        "application/json",
        &widget("w-x", json!({"size": "S"})),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("fieldValidation: Unsupported value: \"Loose\": supported values: \"Ignore\", \"Strict\", \"Warn\""),
        "{}",
        a.body
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn status_writes_are_judged_by_the_status_schema_and_apply_goes_through_validation() {
    let (sim, client) = with_widgets().await;
    let a = send(
        &client,
        "POST",
        WIDGETS,
        "application/json",
        &widget("w-1", json!({"size": "S"})),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    let status = format!("{WIDGETS}/w-1/status");
    let a = send(
        &client,
        "PATCH",
        &status,
        "application/merge-patch+json",
        &json!({"status": {"phase": "Gone", "count": -1}}),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    // The details of a status error name the field relative to the status schema, as a
    // real server's do; an enum violation keeps the rules from running, as there.
    assert_eq!(
        a.causes(),
        [
            "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            "status.count: Invalid value: -1: count in body should be greater than or equal to 0",
            "status.phase: Unsupported value: \"Gone\": supported values: \"Pending\", \"Ready\"",
        ]
    );
    let a = send(
        &client,
        "PATCH",
        &status,
        "application/merge-patch+json",
        &json!({"status": {"phase": "Ready", "count": 2}}),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    // Server-side apply of the status: validated like any write.
    let a = send(
        &client,
        "PATCH",
        &format!("{status}?fieldManager=ctrl&force=true"),
        "application/apply-patch+yaml",
        &json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w-1"}, "status": {"phase": "Later"}}),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(
        a.causes(),
        [
            "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            "status.phase: Unsupported value: \"Later\": supported values: \"Pending\", \"Ready\"",
        ]
    );
    // Apply of the object: its own schema and rules.
    let a = send(
        &client,
        "PATCH",
        &format!("{WIDGETS}/w-1?fieldManager=me&force=true"),
        "application/apply-patch+yaml",
        &widget(
            "w-1",
            json!({"size": "S", "minReplicas": 9, "maxReplicas": 2}),
        ),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(
        a.causes(),
        ["spec.minReplicas: Invalid value: minReplicas (9) must not exceed maxReplicas (2)"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unchanged_values_are_not_rejudged_when_a_schema_tightens() {
    let (sim, client) = with_widgets().await;
    let a = send(
        &client,
        "POST",
        WIDGETS,
        "application/json",
        &widget("w-1", json!({"size": "S", "legacy": "OLD"})),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    // The CRD now requires a lowercase legacy value.
    let crd_path = format!("{CRDS}/widgets.example.com");
    let a = send(
        &client,
        "PATCH",
        &crd_path,
        "application/json-patch+json",
        &json!([{"op": "add", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/legacy/pattern", "value": "^[a-z]+$"}]),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    // Another field can change: the old legacy value is ratcheted.
    let a = send(
        &client,
        "PATCH",
        &format!("{WIDGETS}/w-1"),
        "application/merge-patch+json",
        &json!({"spec": {"color": "green"}}),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    // A new invalid value cannot be written.
    let a = send(
        &client,
        "PATCH",
        &format!("{WIDGETS}/w-1"),
        "application/merge-patch+json",
        &json!({"spec": {"legacy": "NEW"}}),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(
        a.causes(),
        ["spec.legacy: Invalid value: \"NEW\": spec.legacy in body should match '^[a-z]+$'"]
    );
    // Nor can a new object carry the old value.
    let a = send(
        &client,
        "POST",
        WIDGETS,
        "application/json",
        &widget("w-2", json!({"size": "S", "legacy": "OLD"})),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    sim.shutdown().await;
}

#[tokio::test]
async fn crd_writes_warn_about_unknown_formats_and_refuse_rules_that_do_not_compile() {
    let sim = sim().await;
    let client = sim.client();
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["count"] = json!({"type": "integer", "format": "uint32"});
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["total"] = json!({"type": "integer", "format": "uint32"});
    let a = send(&client, "POST", CRDS, "application/json", &crd).await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert_eq!(
        a.warnings,
        ["unrecognized format \"uint32\""],
        "one warning per distinct text"
    );
    // Rewriting the CRD with the same formats warns no more (only new ones are news).
    let a = send(
        &client,
        "PATCH",
        &format!("{CRDS}/widgets.example.com"),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"touched": "yes"}}}),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    // The unknown format is not enforced on values.
    let a = send(
        &client,
        "POST",
        WIDGETS,
        "application/json",
        &widget("w-1", json!({"size": "S", "count": -5})),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);

    // A rule that does not compile is refused with the CRD.
    let mut broken = widget_crd();
    broken["metadata"]["name"] = json!("gadgets.example.com");
    broken["spec"]["names"] = json!({"plural": "gadgets", "singular": "gadget", "kind": "Gadget"});
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] =
        json!([{"rule": "self.metadata.name ==", "message": "broken"}]);
    let a = send(&client, "POST", CRDS, "application/json", &broken).await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(a.body["details"]["kind"], "CustomResourceDefinition");
    let causes = a.causes();
    assert!(
        causes.len() == 1
            && causes[0].starts_with("spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[0].rule: Invalid value: ")
            && causes[0].contains("compilation failed"),
        "{causes:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_projects_crd_applies_without_warnings_and_its_rules_hold() {
    let sim = sim().await;
    let client = sim.client();
    let crd: Value = serde_yaml::from_str(include_str!(
        "../../../crds/trust.linkerd.io_trustanchorrotations.yaml"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let a = send(&client, "POST", CRDS, "application/json", &crd).await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert!(
        a.warnings.is_empty(),
        "applying the TrustAnchorRotation CRD warns: {:?}",
        a.warnings
    );
    let tars = "/apis/trust.linkerd.io/v1alpha1/trustanchorrotations";
    let a = send(
        &client,
        "POST",
        tars,
        "application/json",
        &json!({"apiVersion": "trust.linkerd.io/v1alpha1", "kind": "TrustAnchorRotation", "metadata": {"name": "cluster"},
                "spec": {"workloadCertificateRefreshInterval": "1h30m"}}),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(
        a.causes(),
        ["spec.workloadCertificateRefreshInterval: Invalid value: \"1h30m\": spec.workloadCertificateRefreshInterval in body should match '^\\d+(ms|s|m|h|d)?$'"]
    );
    let a = send(
        &client,
        "POST",
        tars,
        "application/json",
        &json!({"apiVersion": "trust.linkerd.io/v1alpha1", "kind": "TrustAnchorRotation", "metadata": {"name": "cluster"}, "spec": {}}),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    // The operator's counts are int32: a negative one is refused.
    let a = send(
        &client,
        "PATCH",
        &format!("{tars}/cluster/status"),
        "application/merge-patch+json",
        &json!({"status": {"trustBundle": {"converged": -1, "target": 3, "summary": "-1/3"}}}),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    assert_eq!(
        a.causes(),
        ["status.trustBundle.converged: Invalid value: -1: trustBundle.converged in body should be greater than or equal to 0"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn cert_manager_objects_are_judged_by_cert_managers_own_schemas() {
    let sim = sim().await;
    let client = sim.client();
    let certs = "/apis/cert-manager.io/v1/namespaces/default/certificates";
    let cert = |spec: Value| json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"}, "spec": spec});
    // secretName and issuerRef are required; the key algorithm is an enum.
    let a = send(
        &client,
        "POST",
        certs,
        "application/json",
        &cert(json!({"commonName": "x", "privateKey": {"algorithm": "DSA"}})),
    )
    .await;
    assert_eq!(a.code, 422, "{}", a.body);
    let causes = a.causes();
    for want in [
        "spec.issuerRef: Required value",
        "spec.secretName: Required value",
        "spec.privateKey.algorithm: Unsupported value: \"DSA\": supported values: \"RSA\", \"ECDSA\", \"Ed25519\"",
    ] {
        assert!(causes.iter().any(|c| c == want), "missing {want:?} in {causes:#?}");
    }
    assert_eq!(a.body["details"]["group"], "cert-manager.io");
    let a = send(
        &client,
        "POST",
        certs,
        "application/json",
        &cert(json!({"secretName": "c", "commonName": "x", "isCA": true,
                     "privateKey": {"algorithm": "ECDSA", "rotationPolicy": "Always"},
                     "issuerRef": {"name": "i", "kind": "Issuer"}})),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    sim.shutdown().await;
}

/// Every cert-manager object in the store passes its real CRD schema (spec and status)
/// and has no field the schema does not declare.
fn assert_cert_manager_objects_valid(sim: &Sim) -> usize {
    use cluster_sim::api::crd::{SchemaCache, Write};
    use cluster_sim::store::ResourceKey;
    let cache = SchemaCache::default();
    let mut checked = 0;
    for plural in [
        "certificates",
        "certificaterequests",
        "issuers",
        "clusterissuers",
    ] {
        let key = ResourceKey::new("cert-manager.io", plural);
        let t = sim
            .store()
            .resource_type(&key)
            .unwrap_or_else(|| panic!("{plural} are served"));
        let schema = cache
            .get(sim.store(), &t)
            .unwrap_or_else(|| panic!("{plural} have a schema"));
        let (objects, _) = sim.store().list(&key, None);
        for obj in objects {
            let id = format!(
                "{plural} {}/{}",
                obj["metadata"]["namespace"].as_str().unwrap_or(""),
                obj["metadata"]["name"].as_str().unwrap_or("")
            );
            let mut copy = (*obj).clone();
            let unknown = schema.coerce(&mut copy);
            assert!(
                unknown.is_empty(),
                "{id} has undeclared fields {unknown:?}: {obj}"
            );
            let (errs, _) = schema.validate(&obj, Write::Create);
            let msgs: Vec<String> = errs.iter().map(|e| e.message()).collect();
            assert!(msgs.is_empty(), "{id} breaks its schema: {msgs:#?}\n{obj}");
            checked += 1;
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_cert_manager_writes_what_cert_managers_schemas_accept() {
    let sim = Sim::start(SimConfig {
        topology: cluster_sim::Topology::Demo,
        durations: cluster_sim::Durations::fast(),
        ..SimConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("starting the simulator: {e:#}"));
    let issued = assert_cert_manager_objects_valid(&sim);
    assert!(issued >= 4, "the demo's PKI was checked ({issued} objects)");
    // A renewal as `cmctl renew` asks for it, through the API (and so through validation):
    // the re-issued Certificate is valid too.
    let client = sim.client();
    let path = "/apis/cert-manager.io/v1/namespaces/linkerd/certificates/linkerd-identity-issuer";
    let before = send(&client, "GET", path, "application/json", &Value::Null).await;
    let revision = before.body["status"]["revision"].as_i64().unwrap_or(0);
    let mut conditions = before.body["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conditions.push(json!({"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
        "message": "Certificate re-issuance manually triggered", "lastTransitionTime": "2024-01-01T00:00:00Z"}));
    let a = send(
        &client,
        "PATCH",
        &format!("{path}/status?fieldValidation=Strict"),
        "application/merge-patch+json",
        &json!({"status": {"conditions": conditions}}),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    let mut renewed = false;
    for _ in 0..250 {
        let now = send(&client, "GET", path, "application/json", &Value::Null).await;
        if now.body["status"]["revision"].as_i64().unwrap_or(0) > revision {
            renewed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        renewed,
        "the simulated cert-manager re-issued the certificate"
    );
    assert_eq!(assert_cert_manager_objects_valid(&sim), issued);
    sim.shutdown().await;
}

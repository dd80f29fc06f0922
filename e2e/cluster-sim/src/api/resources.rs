//! The verbs on resources: get, list, watch, create, update, patch, delete, deletecollection,
//! with the `status` subresource rules, admission checks (names, namespaces) and field
//! management.

use super::crd::{self, CrdSchema, FieldValidation, Write};
use super::patch;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{json_response, ApiError, ApiResult};
use super::{metrics, protobuf, table, watch, ApiState, Query, Target};
use crate::store::{ListFrom, ResourceKey, ResourceType, StoreError};
use axum::body::Body;
use axum::response::Response;
use base64::Engine;
use http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

const MAX_BODY: usize = 64 * 1024 * 1024;

/// The served type a request addresses, checked against its version and scope.
pub fn resolve(st: &ApiState, target: &Target) -> ApiResult<ResourceType> {
    let t = st
        .store
        .resource_type(&ResourceKey::new(&target.group, &target.plural))
        .filter(|t| t.version == target.version)
        .ok_or_else(ApiError::unknown_resource)?;
    if target.namespace.is_some() && !t.namespaced {
        return Err(ApiError::unknown_resource());
    }
    if t.namespaced && target.namespace.is_none() && target.name.is_some() {
        return Err(ApiError::unknown_resource());
    }
    match target.subresource.as_deref() {
        None => {}
        Some("status") if t.status_subresource => {}
        Some("eviction") if t.key.plural == "pods" && t.key.group.is_empty() => {}
        Some("finalize") if t.key.plural == "namespaces" && t.key.group.is_empty() => {}
        Some(_) => return Err(ApiError::unknown_resource()),
    }
    Ok(t)
}

/// `configmaps` or `deployments.apps`, as messages name a resource.
pub fn resource_name(t: &ResourceType) -> String {
    if t.key.group.is_empty() {
        t.key.plural.clone()
    } else {
        format!("{}.{}", t.key.plural, t.key.group)
    }
}

fn not_found(t: &ResourceType, name: &str) -> ApiError {
    let mut e = ApiError::not_found(&resource_name(t), name);
    e.details = if t.key.group.is_empty() {
        json!({"name": name, "kind": t.key.plural})
    } else {
        json!({"name": name, "group": t.key.group, "kind": t.key.plural})
    };
    e
}

fn map_store(t: &ResourceType, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound { name, .. } => not_found(t, &name),
        StoreError::AlreadyExists { name, .. } => {
            let mut d = json!({"name": name, "kind": t.key.plural});
            if !t.key.group.is_empty() {
                d["group"] = json!(t.key.group);
            }
            ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", resource_name(t)),
            )
            .details(d)
        }
        StoreError::Conflict { name, .. } => conflict(t, &name),
        other => other.into(),
    }
}

fn conflict(t: &ResourceType, name: &str) -> ApiError {
    let mut d = json!({"name": name, "kind": t.key.plural});
    if !t.key.group.is_empty() {
        d["group"] = json!(t.key.group);
    }
    ApiError::new(
        409,
        "Conflict",
        format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", resource_name(t)),
    )
    .details(d)
}

fn media_type(req: &Request<Body>) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Decodes a request body by its media type (JSON, YAML, Kubernetes protobuf for the kinds
/// kubectl's generators send).
pub fn decode_body(media: &str, body: &[u8]) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty: expected a JSON or YAML object",
        ));
    }
    let v: Value = match media {
        "application/vnd.kubernetes.protobuf" => {
            protobuf::decode(body).map_err(ApiError::bad_request)?
        }
        "application/yaml"
        | "application/apply-patch+yaml"
        | "application/x-yaml"
        | "text/yaml" => serde_yaml::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
        })?,
        ""
        | "application/json"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json"
        | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    Ok(v)
}

fn manager(req_ua: &str, query: &Query) -> String {
    query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| metrics::user_agent_product(req_ua))
}

fn is_dry_run(query: &Query) -> bool {
    query.get("dryRun").is_some_and(|d| d == "All")
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// A 422 with one cause, naming the kind as a real server does (`ConfigMap`,
/// `Deployment.apps`, `TrustAnchorRotation.trust.linkerd.io`).
fn invalid_field(t: &ResourceType, name: &str, field: &str, detail: &str) -> ApiError {
    let qualified = if t.key.group.is_empty() {
        t.kind.clone()
    } else {
        format!("{}.{}", t.kind, t.key.group)
    };
    let mut e = ApiError::invalid(&qualified, name, field, detail);
    e.details["kind"] = json!(t.kind);
    if !t.key.group.is_empty() {
        e.details["group"] = json!(t.key.group);
    }
    e
}

/// Validates an object name as the API server does for its kind.
pub fn validate_name(t: &ResourceType, name: &str) -> ApiResult<()> {
    let label_kind =
        t.key.group.is_empty() && matches!(t.key.plural.as_str(), "namespaces" | "services");
    let rbac = t.key.group == "rbac.authorization.k8s.io";
    let ok = if rbac {
        !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains('/')
            && !name.contains('%')
    } else if label_kind {
        is_label(name)
    } else {
        is_subdomain(name)
    };
    if ok {
        return Ok(());
    }
    let detail = if rbac {
        format!("Invalid value: {name:?}: may not contain '/' or '%' and may not be '.' or '..'")
    } else if label_kind {
        format!("Invalid value: {name:?}: {LABEL_MSG}")
    } else if name.len() > 253 {
        format!("Invalid value: {name:?}: must be no more than 253 characters")
    } else {
        format!("Invalid value: {name:?}: {SUBDOMAIN_MSG}")
    };
    Err(invalid_field(t, name, "metadata.name", &detail))
}

fn ensure_namespace(st: &ApiState, ns: &str) -> ApiResult<()> {
    let key = ResourceKey::new("", "namespaces");
    match st.store.get(&key, None, ns) {
        Some(obj) if obj["metadata"]["deletionTimestamp"].is_string() => Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        )),
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("namespaces", ns)),
    }
}

/// Checks the body's apiVersion/kind against the type and its namespace against the URL,
/// filling in what is missing.
fn check_identity(t: &ResourceType, target: &Target, obj: &mut Value) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the request body must be a {} object, found {}",
            t.kind,
            kind_of_json(obj)
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
        if av != t.api_version() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                t.api_version()
            )));
        }
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str) {
        if k != t.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                t.kind
            )));
        }
    }
    if !obj["metadata"].is_object() {
        if obj["metadata"].is_null() {
            obj["metadata"] = json!({});
        } else {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
    }
    if t.namespaced {
        let path_ns = target.namespace.as_deref().unwrap_or("");
        match obj["metadata"]["namespace"].as_str() {
            Some(ns) if !ns.is_empty() && ns != path_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => obj["metadata"]["namespace"] = json!(path_ns),
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if let Some(name) = &target.name {
        match obj["metadata"]["name"].as_str() {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            _ => obj["metadata"]["name"] = json!(name),
        }
    }
    if let Some(labels) = obj["metadata"].get("labels") {
        if !labels.is_null()
            && !labels
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
        {
            return Err(ApiError::bad_request(
                "metadata.labels must be a map of strings",
            ));
        }
    }
    if let Some(a) = obj["metadata"].get("annotations") {
        if !a.is_null()
            && !a
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
        {
            return Err(ApiError::bad_request(
                "metadata.annotations must be a map of strings",
            ));
        }
    }
    Ok(())
}

fn kind_of_json(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub async fn handle(
    st: &Arc<ApiState>,
    req: Request<Body>,
    target: Target,
    query: Query,
    accept: &str,
) -> ApiResult<Response> {
    let t = resolve(st, &target)?;
    let method = req.method().clone();
    let media = media_type(&req);
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| {
            ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("reading the request body failed: {e}"),
            )
        })?;
    let sub = target.subresource.as_deref();
    let mut warnings = Vec::new();
    let w = &mut warnings;
    let result = match (method, target.name.as_deref()) {
        (Method::GET, _) if watch => watch::serve(st, &t, &target, &query, accept),
        (Method::GET, Some(name)) => get(st, &t, &target, name, accept),
        (Method::GET, None) => list(st, &t, &target, &query, accept),
        (Method::POST, None) => create(st, &t, &target, &query, &media, &body, &ua, w),
        (Method::POST, Some(name)) if sub == Some("eviction") => {
            let eviction = decode_body(&media, &body)?;
            let ns = target.namespace.as_deref().unwrap_or("");
            let status =
                super::workloads::evict(&st.store, ns, name, &eviction, is_dry_run(&query))?;
            Ok(json_response(StatusCode::CREATED, &status))
        }
        (Method::PUT, Some(name)) => {
            update(st, &t, &target, name, &query, &media, &body, &ua, sub, w)
        }
        (Method::PATCH, Some(name)) => {
            patch(st, &t, &target, name, &query, &media, &body, &ua, sub, w)
        }
        (Method::DELETE, Some(name)) if sub.is_none() => {
            delete(st, &t, &target, name, &query, &body)
        }
        (Method::DELETE, None) => delete_collection(st, &t, &target, &query),
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    };
    let mut resp = result.unwrap_or_else(axum::response::IntoResponse::into_response);
    add_warnings(&mut resp, &warnings);
    Ok(resp)
}

/// Adds `Warning: 299 - "<text>"` headers, once per distinct text, as a real server's
/// warning recorder does (kubectl prints each as `Warning: <text>`).
fn add_warnings(resp: &mut Response, warnings: &[String]) {
    let mut seen: Vec<&str> = Vec::new();
    for w in warnings {
        if w.is_empty() || seen.contains(&w.as_str()) {
            continue;
        }
        seen.push(w);
        let text: String = w
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
}

/// The field validation directive of a write (`fieldValidation`), or the 422 for a bad one.
fn field_validation(query: &Query, options_kind: &str) -> ApiResult<FieldValidation> {
    FieldValidation::parse(query.get("fieldValidation").map(String::as_str))
        .map_err(|e| crd::errors::invalid_status(options_kind, "meta.k8s.io", "", &[e]))
}

/// `unknown field "spec.x"`, as strict decoding reports each unknown field.
fn unknown_field_texts(unknown: &[String]) -> Vec<String> {
    unknown
        .iter()
        .map(|p| format!("unknown field {}", crd::errors::go_quote(p)))
        .collect()
}

/// Prunes a custom resource as a real server's decoder does and applies the directive to
/// what was unknown: warnings for `Warn`, nothing for `Ignore`; for `Strict`, the unknown
/// fields' texts are returned for the caller to refuse the request with.
fn coerce_custom(
    schema: &CrdSchema,
    obj: &mut Value,
    directive: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<(), Vec<String>> {
    let unknown = schema.coerce(obj);
    if unknown.is_empty() {
        return Ok(());
    }
    match directive {
        FieldValidation::Ignore => Ok(()),
        FieldValidation::Warn => {
            warnings.extend(unknown_field_texts(&unknown));
            Ok(())
        }
        FieldValidation::Strict => Err(unknown_field_texts(&unknown)),
    }
}

/// The 400 a real server answers when a created or replaced object has unknown fields and
/// the client asked for strict field validation.
fn strict_decoding_error(t: &ResourceType, unknown: &[String]) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version {} cannot be handled as a {}: strict decoding error: {}",
        t.kind,
        crd::errors::go_quote(&t.version),
        t.kind,
        unknown.join(", ")
    ))
}

fn get(
    st: &ApiState,
    t: &ResourceType,
    target: &Target,
    name: &str,
    accept: &str,
) -> ApiResult<Response> {
    let obj = st
        .store
        .get(&t.key, target.namespace.as_deref(), name)
        .ok_or_else(|| not_found(t, name))?;
    if wants_metadata(accept) {
        return Ok(json_response(StatusCode::OK, &partial_metadata(&obj)));
    }
    if table::wants_table(accept) {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        return Ok(json_response(
            StatusCode::OK,
            &table::render(t, std::slice::from_ref(&obj), &rv, None),
        ));
    }
    Ok(json_response(StatusCode::OK, &obj))
}

/// A continue token as a real API server encodes it: base64 (URL-safe, unpadded) of
/// `{"v":"meta.k8s.io/v1","rv":<snapshot>,"start":"<key after the last item>\u0000"}`, the
/// key relative to the list's scope (`ns/name` across namespaces, `name` within one). An
/// `rv` of -1 continues at the latest state (what an expired token's 410 offers).
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(
    target: &Target,
    t: &ResourceType,
    rv: i64,
    after: &(Option<String>, String),
) -> String {
    let start = match (&after.0, t.namespaced && target.namespace.is_none()) {
        (Some(ns), true) => format!("{ns}/{}\u{0}", after.1),
        _ => format!("{}\u{0}", after.1),
    };
    let tok = serde_json::to_vec(&ContinueToken {
        v: "meta.k8s.io/v1".to_string(),
        rv,
        start,
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok)
}

/// The token's snapshot version (-1 for "latest") and the key it continues after.
fn decode_continue(
    target: &Target,
    t: &ResourceType,
    token: &str,
) -> ApiResult<(i64, (Option<String>, String))> {
    let invalid = |why: String| ApiError::bad_request(format!("invalid continue token: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| invalid(format!("continue key is not valid: {e}")))?;
    let tok: ContinueToken = serde_json::from_slice(&raw)
        .map_err(|e| invalid(format!("continue key is not valid: {e}")))?;
    if tok.v != "meta.k8s.io/v1" {
        return Err(invalid(format!(
            "continue key is not valid: server does not recognize this encoded version {}",
            tok.v
        )));
    }
    if tok.rv == 0 {
        return Err(invalid(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)".to_string(),
        ));
    }
    let start = tok.start.trim_end_matches('\u{0}');
    if start.is_empty() {
        return Err(invalid(
            "continue key is not valid: encoded start key empty (version meta.k8s.io/v1)"
                .to_string(),
        ));
    }
    let key = match (t.namespaced, &target.namespace) {
        (false, _) => (None, start.to_string()),
        (true, Some(ns)) => (Some(ns.clone()), start.to_string()),
        (true, None) => match start.split_once('/') {
            Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
            None => return Err(invalid(format!("continue key is not valid: {start}"))),
        },
    };
    if key.1.contains('/') {
        return Err(invalid(format!("continue key is not valid: {start}")));
    }
    Ok((tok.rv, key))
}

/// The 410 a real server answers for a continue token whose snapshot is gone, with a token
/// that continues, inconsistently, at the latest state.
fn continue_expired(
    target: &Target,
    t: &ResourceType,
    after: &(Option<String>, String),
) -> ApiError {
    let mut e = ApiError::new(
        410,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
    );
    e.list_continue = Some(encode_continue(target, t, -1, after).into());
    e
}

pub fn selectors(query: &Query) -> ApiResult<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn list(
    st: &ApiState,
    t: &ResourceType,
    target: &Target,
    query: &Query,
    accept: &str,
) -> ApiResult<Response> {
    let (labels, fields) = selectors(query)?;
    let limit = match query.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "limit: invalid value {l:?}: must be a non-negative integer"
            ))
        })?),
        None => None,
    };
    let cont_in = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let decoded = decode_continue(target, t, c)?;
            if query
                .get("resourceVersion")
                .is_some_and(|rv| !rv.is_empty() && rv != "0")
            {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            Some(decoded)
        }
        None => None,
    };
    let from = match &cont_in {
        None => ListFrom::Start,
        Some((-1, after)) => ListFrom::Latest { after },
        Some((rv, after)) => ListFrom::Snapshot {
            snapshot: u64::try_from(*rv).unwrap_or(0),
            after,
        },
    };
    let no_selector = labels.is_empty() && fields.is_empty();
    let filter = |o: &Value| labels.matches(&o["metadata"]["labels"]) && fields.matches(o);
    let page = match st.store.list_chunk(
        &t.key,
        target.namespace.as_deref(),
        from,
        limit,
        no_selector,
        &filter,
    ) {
        Ok(p) => p,
        Err(StoreError::Gone { .. }) => {
            let after = cont_in.map(|(_, a)| a).unwrap_or_default();
            return Err(continue_expired(target, t, &after));
        }
        Err(e) => return Err(map_store(t, e)),
    };
    let rv = page.resource_version.to_string();
    let snapshot_rv = i64::try_from(page.resource_version).unwrap_or(i64::MAX);
    let cont = page
        .next_after
        .as_ref()
        .map(|after| encode_continue(target, t, snapshot_rv, after));
    if wants_metadata(accept) {
        let mut meta = json!({"resourceVersion": rv});
        if let Some(c) = &cont {
            meta["continue"] = json!(c);
        }
        if let Some(n) = page.remaining {
            meta["remainingItemCount"] = json!(n);
        }
        let items: Vec<Value> = page.items.iter().map(|o| partial_metadata(o)).collect();
        return Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
        ));
    }
    if table::wants_table(accept) {
        let mut tbl = table::render(t, &page.items, &rv, cont.as_deref());
        if let Some(n) = page.remaining {
            tbl["metadata"]["remainingItemCount"] = json!(n);
        }
        return Ok(json_response(StatusCode::OK, &tbl));
    }
    // Serialize the items in place: a list of 10,000 pods is never cloned.
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = &cont {
        meta["continue"] = json!(c);
    }
    if let Some(n) = page.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    let mut buf = Vec::with_capacity(256 + page.items.len() * 1024);
    buf.extend_from_slice(b"{\"kind\":");
    let _ = serde_json::to_writer(&mut buf, &t.list_kind);
    buf.extend_from_slice(b",\"apiVersion\":");
    let _ = serde_json::to_writer(&mut buf, &t.api_version());
    buf.extend_from_slice(b",\"metadata\":");
    let _ = serde_json::to_writer(&mut buf, &meta);
    buf.extend_from_slice(b",\"items\":[");
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        let _ = serde_json::to_writer(&mut buf, &**item);
    }
    buf.extend_from_slice(b"]}");
    let mut resp = Response::new(Body::from(buf));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Prepares a new object for storage: identity checks, name and namespace admission, the
/// status subresource rule (status is not set on create), field management.
#[allow(clippy::too_many_arguments)]
fn admit_new(
    st: &ApiState,
    t: &ResourceType,
    target: &Target,
    mut obj: Value,
    manager: &str,
    directive: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<Value> {
    check_identity(t, target, &mut obj)?;
    let schema = st.schemas.get(&st.store, t);
    if let Some(schema) = &schema {
        coerce_custom(schema, &mut obj, directive, warnings)
            .map_err(|unknown| strict_decoding_error(t, &unknown))?;
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let generate = obj["metadata"]["generateName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        if generate.is_empty() {
            return Err(invalid_field(
                t,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        validate_name(t, &format!("{generate}x"))?;
    } else {
        validate_name(t, &name)?;
    }
    if let Some(ns) = &target.namespace {
        ensure_namespace(st, ns)?;
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "selfLink",
        ] {
            m.remove(f);
        }
    }
    if t.key.group.is_empty() && t.key.plural == "namespaces" {
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        obj["status"] = json!({"phase": "Active"});
        if obj["spec"].is_null() {
            obj["spec"] = json!({});
        }
    } else if t.status_subresource && t.key != crate::store::crd_key() {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    obj["apiVersion"] = json!(t.api_version());
    obj["kind"] = json!(t.kind);
    if let Some(schema) = &schema {
        schema.default(&mut obj);
        let (errs, warns) = schema.validate(&obj, Write::Create);
        warnings.extend(warns);
        if !errs.is_empty() {
            return Err(schema.invalid(&name, &errs));
        }
    }
    if t.key == crate::store::crd_key() {
        check_crd(&obj, None, warnings)?;
    }
    super::workloads::admit(t, &mut obj, true)?;
    if obj["metadata"]["managedFields"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        patch::track_update(None, &mut obj, manager, None);
    }
    Ok(obj)
}

/// What a real server checks and warns about when a CustomResourceDefinition is written:
/// its CEL rules must compile; schema formats it does not know (newly introduced ones, on
/// an update) are warned about.
fn check_crd(crd: &Value, old: Option<&Value>, warnings: &mut Vec<String>) -> ApiResult<()> {
    let errs = crd::crd_rule_errors(crd);
    if !errs.is_empty() {
        let name = crd["metadata"]["name"].as_str().unwrap_or("");
        return Err(crd::errors::invalid_status(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            &errs,
        ));
    }
    let before = old
        .map(crd::formats::crd_format_warnings)
        .unwrap_or_default();
    warnings.extend(
        crd::formats::crd_format_warnings(crd)
            .into_iter()
            .filter(|w| !before.contains(w)),
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn create(
    st: &ApiState,
    t: &ResourceType,
    target: &Target,
    query: &Query,
    media: &str,
    body: &[u8],
    ua: &str,
    warnings: &mut Vec<String>,
) -> ApiResult<Response> {
    let directive = field_validation(query, "CreateOptions")?;
    let obj = decode_body(media, body)?;
    let obj = admit_new(st, t, target, obj, &manager(ua, query), directive, warnings)?;
    if is_dry_run(query) {
        return Ok(json_response(StatusCode::CREATED, &obj));
    }
    let created = st.store.create(&t.key, obj).map_err(|e| map_store(t, e))?;
    Ok(json_response(StatusCode::CREATED, &created))
}

/// The next version of an object after a write through `subresource`: a write to the object
/// leaves status alone, a write to `/status` changes only status.
fn apply_subresource_rule(
    t: &ResourceType,
    current: &Value,
    mut next: Value,
    subresource: Option<&str>,
) -> Value {
    match subresource {
        Some("status") => {
            let mut out = current.clone();
            match next.as_object_mut().and_then(|m| m.remove("status")) {
                Some(s) => out["status"] = s,
                None => {
                    if let Some(m) = out.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            out
        }
        _ => {
            if t.status_subresource {
                match current.get("status") {
                    Some(s) => next["status"] = s.clone(),
                    None => {
                        if let Some(m) = next.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            next
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn update(
    st: &ApiState,
    t: &ResourceType,
    target: &Target,
    name: &str,
    query: &Query,
    media: &str,
    body: &[u8],
    ua: &str,
    sub: Option<&str>,
    warnings: &mut Vec<String>,
) -> ApiResult<Response> {
    let directive = field_validation(query, "UpdateOptions")?;
    let mut obj = decode_body(media, body)?;
    check_identity(t, target, &mut obj)?;
    let schema = st.schemas.get(&st.store, t);
    if let Some(schema) = &schema {
        coerce_custom(schema, &mut obj, directive, warnings)
            .map_err(|unknown| strict_decoding_error(t, &unknown))?;
        schema.default(&mut obj);
    }
    super::workloads::admit(t, &mut obj, false)?;
    let manager = manager(ua, query);
    let inject_conflict = st.faults.conflict();
    let dry = is_dry_run(query);
    let mut failure: Option<ApiError> = None;
    let mut preview: Option<Value> = None;
    let result = st
        .store
        .mutate(&t.key, target.namespace.as_deref(), name, |cur| {
            let current_rv = cur["metadata"]["resourceVersion"].as_str().unwrap_or("");
            let sent_rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if inject_conflict || (!sent_rv.is_empty() && sent_rv != current_rv) {
                failure = Some(conflict(t, name));
                return Err(StoreError::Invalid(String::new()));
            }
            if let Some(e) = uid_precondition(t, name, cur, &obj) {
                failure = Some(e);
                return Err(StoreError::Invalid(String::new()));
            }
            let mut next = apply_subresource_rule(t, cur, obj, sub);
            if next["metadata"]["managedFields"].is_null() {
                next["metadata"]["managedFields"] = cur["metadata"]["managedFields"].clone();
            }
            if let Err(e) = validate_write(t, schema.as_deref(), cur, &next, sub, warnings) {
                failure = Some(e);
                return Err(StoreError::Invalid(String::new()));
            }
            patch::track_update(Some(cur), &mut next, &manager, sub);
            if dry {
                preview = Some(next);
                failure = Some(ApiError::new(200, "", ""));
                return Err(StoreError::Invalid(String::new()));
            }
            *cur = next;
            Ok(())
        });
    match (result, failure, preview) {
        (_, _, Some(p)) => Ok(json_response(StatusCode::OK, &p)),
        (Ok(obj), _, _) => Ok(json_response(StatusCode::OK, &obj)),
        (Err(_), Some(f), _) => Err(f),
        (Err(e), None, _) => Err(map_store(t, e)),
    }
}

/// Validates the object an update or patch would store over `cur`: a custom resource
/// against its schema and rules (the status schema for a `/status` write), a
/// CustomResourceDefinition's rules and formats.
fn validate_write(
    t: &ResourceType,
    schema: Option<&CrdSchema>,
    cur: &Value,
    next: &Value,
    sub: Option<&str>,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if let Some(schema) = schema {
        let write = if sub == Some("status") {
            Write::Status { old: cur }
        } else {
            Write::Update { old: cur }
        };
        let (errs, warns) = schema.validate(next, write);
        if !errs.is_empty() {
            let name = cur["metadata"]["name"].as_str().unwrap_or("");
            return Err(schema.invalid(name, &errs));
        }
        warnings.extend(warns);
    }
    if t.key == crate::store::crd_key() && sub.is_none() {
        check_crd(next, Some(cur), warnings)?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

#[allow(clippy::too_many_arguments)]
fn patch(
    st: &ApiState,
    t: &ResourceType,
    target: &Target,
    name: &str,
    query: &Query,
    media: &str,
    body: &[u8],
    ua: &str,
    sub: Option<&str>,
    warnings: &mut Vec<String>,
) -> ApiResult<Response> {
    let directive = field_validation(query, "PatchOptions")?;
    let kind = match media {
        "application/merge-patch+json" => PatchType::Merge,
        "application/json-patch+json" => PatchType::Json,
        "application/strategic-merge-patch+json" => PatchType::Strategic,
        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
            ))
        }
    };
    if kind == PatchType::Strategic && !super::builtin::is_builtin(&t.key) {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    let patch_doc: Value = if kind == PatchType::Apply {
        decode_body("application/yaml", body)?
    } else {
        decode_body("application/json", body)?
    };
    let json_ops: Option<Vec<json_patch::PatchOperation>> = if kind == PatchType::Json {
        Some(serde_json::from_value(patch_doc.clone()).map_err(|e| {
            ApiError::bad_request(format!("the JSON patch is not a list of operations: {e}"))
        })?)
    } else {
        None
    };
    if kind != PatchType::Json && !patch_doc.is_object() {
        return Err(ApiError::bad_request(format!(
            "the patch must be a JSON object, found {}",
            kind_of_json(&patch_doc)
        )));
    }
    let force = query.get("force").is_some_and(|f| f == "true");
    let manager = if kind == PatchType::Apply {
        match query.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) => m.clone(),
            None => return Err(ApiError::bad_request("PATCH requests with the apply content type (application/apply-patch+yaml) require a fieldManager query parameter")),
        }
    } else {
        manager(ua, query)
    };
    let mut applied = patch_doc.clone();
    if kind == PatchType::Apply {
        check_identity(t, target, &mut applied)?;
        for (field, what) in [("apiVersion", "apiVersion"), ("kind", "kind")] {
            if applied
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(format!(
                    "{what} must be set in an apply patch"
                )));
            }
        }
    }
    let inject_conflict = kind != PatchType::Apply && st.faults.conflict();
    let schema = st.schemas.get(&st.store, t);
    let dry = is_dry_run(query);
    let ns = target.namespace.as_deref();
    if let (PatchType::Apply, Some(schema)) = (kind, &schema) {
        // Server-side apply types the configuration against the schema first, whatever
        // the field validation directive: an undeclared field fails the request.
        let undeclared = schema.undeclared(&applied);
        if !undeclared.is_empty() {
            let errs: Vec<String> = undeclared
                .iter()
                .map(|p| format!("{p}: field not declared in schema"))
                .collect();
            let detail = if errs.len() == 1 {
                errs[0].clone()
            } else {
                format!("errors:\n  {}", errs.join("\n  "))
            };
            return Err(ApiError::new(
                500,
                "",
                format!(
                    "failed to create typed patch object ({}/{name}; {}, Kind={}): {detail}",
                    ns.unwrap_or(""),
                    t.api_version(),
                    t.kind
                ),
            ));
        }
    }
    // Server-side apply creates what does not exist yet.
    if kind == PatchType::Apply && sub.is_none() && st.store.get(&t.key, ns, name).is_none() {
        let created =
            patch::apply(None, &applied, &manager, force, sub).map_err(|c| ssa_conflict(&c))?;
        let obj = admit_new(
            st,
            t,
            target,
            created,
            &manager,
            FieldValidation::Ignore,
            warnings,
        )?;
        if dry {
            return Ok(json_response(StatusCode::CREATED, &obj));
        }
        match st.store.create(&t.key, obj) {
            Ok(o) => return Ok(json_response(StatusCode::CREATED, &o)),
            Err(StoreError::AlreadyExists { .. }) => {} // raced with a create: apply onto it
            Err(e) => return Err(map_store(t, e)),
        }
    }
    let mut failure: Option<ApiError> = None;
    let mut preview: Option<Value> = None;
    let result = st.store.mutate(&t.key, ns, name, |cur| {
        let fail = |e: ApiError, slot: &mut Option<ApiError>| {
            *slot = Some(e);
            Err(StoreError::Invalid(String::new()))
        };
        if inject_conflict {
            return fail(conflict(t, name), &mut failure);
        }
        // A uid in the patch is a precondition: the object must not have been replaced.
        if kind != PatchType::Json {
            if let Some(e) = uid_precondition(t, name, cur, &patch_doc) {
                return fail(e, &mut failure);
            }
        }
        let current_rv = cur["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
        let patched = match kind {
            PatchType::Merge => {
                let mut n = cur.clone();
                json_patch::merge(&mut n, &patch_doc);
                n
            }
            PatchType::Strategic => {
                let mut n = cur.clone();
                if let Err(e) = patch::strategic_merge(&mut n, &patch_doc) {
                    return fail(ApiError::bad_request(e), &mut failure);
                }
                n
            }
            PatchType::Json => {
                let mut n = cur.clone();
                if let Err(e) = json_patch::patch(&mut n, json_ops.as_deref().unwrap_or(&[])) {
                    return fail(
                        ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}")),
                        &mut failure,
                    );
                }
                n
            }
            PatchType::Apply => match patch::apply(Some(cur), &applied, &manager, force, sub) {
                // As for every patch, a resourceVersion in the applied configuration replaces
                // the stored one in the patched object, so the update below compares versions:
                // a precondition, on /status too (the registry compares before the status
                // strategy copies the old object).
                Ok(mut n) => {
                    if let Some(rv) = applied["metadata"]["resourceVersion"]
                        .as_str()
                        .filter(|v| !v.is_empty())
                    {
                        n["metadata"]["resourceVersion"] = json!(rv);
                    }
                    n
                }
                Err(c) => return fail(ssa_conflict(&c), &mut failure),
            },
        };
        if !patched.is_object() || !(patched["metadata"].is_object() || patched["metadata"].is_null()) {
            return fail(ApiError::bad_request("the patched object is not a Kubernetes object"), &mut failure);
        }
        if patched["metadata"]["name"].as_str() != Some(name) {
            return fail(
                invalid_field(t, name, "metadata.name", "Invalid value: the name of an object cannot be changed"),
                &mut failure,
            );
        }
        if let Some(rv) = patched["metadata"]["resourceVersion"].as_str() {
            if rv != current_rv {
                return fail(conflict(t, name), &mut failure);
            }
        }
        if let Some(e) = uid_precondition(t, name, cur, &patched) {
            return fail(e, &mut failure);
        }
        let mut check = patched;
        if let Err(e) = check_identity(t, &Target { name: Some(name.to_string()), ..target.clone() }, &mut check) {
            return fail(e, &mut failure);
        }
        if let Some(schema) = &schema {
            // The patched object is decoded as a new one would be: unknown fields pruned,
            // and refused with a 422 under strict field validation.
            let original = (directive == FieldValidation::Strict).then(|| check.clone());
            if let Err(unknown) = coerce_custom(schema, &mut check, directive, warnings) {
                let js = serde_json::to_string(original.as_ref().unwrap_or(&check)).unwrap_or_default();
                let e = crd::errors::FieldError::invalid(
                    "patch",
                    json!(js),
                    format!("strict decoding error: {}", unknown.join(", ")),
                );
                return fail(crd::errors::invalid_status("", "", "", &[e]), &mut failure);
            }
        }
        let mut next = apply_subresource_rule(t, cur, check, sub);
        if let Some(schema) = &schema {
            schema.default(&mut next);
            if let Err(e) = validate_write(t, Some(schema), cur, &next, sub, warnings) {
                return fail(e, &mut failure);
            }
        } else if let Err(e) = validate_write(t, None, cur, &next, sub, warnings) {
            return fail(e, &mut failure);
        }
        if let Err(e) = super::workloads::admit(t, &mut next, false) {
            return fail(e, &mut failure);
        }
        if kind != PatchType::Apply {
            patch::track_update(Some(cur), &mut next, &manager, sub);
        }
        if dry {
            preview = Some(next);
            return fail(ApiError::new(200, "", ""), &mut failure);
        }
        *cur = next;
        Ok(())
    });
    match (result, failure, preview) {
        (_, _, Some(p)) => Ok(json_response(StatusCode::OK, &p)),
        (Ok(obj), _, _) => Ok(json_response(StatusCode::OK, &obj)),
        (Err(_), Some(f), _) => Err(f),
        (Err(e), None, _) => Err(map_store(t, e)),
    }
}

/// The `409` a real server answers for apply conflicts.
fn ssa_conflict(conflicts: &[patch::Conflict]) -> ApiError {
    let n = conflicts.len();
    let message = if n == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with \"{}\": {}",
            conflicts[0].manager, conflicts[0].field
        )
    } else {
        let mut m = format!("Apply failed with {n} conflicts:");
        for c in conflicts {
            m.push_str(&format!(" conflict with \"{}\": {};", c.manager, c.field));
        }
        m.trim_end_matches(';').to_string()
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": c.field}))
        .collect();
    ApiError::new(409, "Conflict", message).details(json!({"causes": causes}))
}

fn delete(
    st: &ApiState,
    t: &ResourceType,
    target: &Target,
    name: &str,
    query: &Query,
    body: &[u8],
) -> ApiResult<Response> {
    let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}"))
        })?
    };
    let ns = target.namespace.as_deref();
    let current = st
        .store
        .get(&t.key, ns, name)
        .ok_or_else(|| not_found(t, name))?;
    let pre = &opts["preconditions"];
    if let Some(uid) = pre["uid"].as_str() {
        let actual = current["metadata"]["uid"].as_str().unwrap_or("");
        if uid != actual {
            return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}", resource_name(t))));
        }
    }
    if let Some(rv) = pre["resourceVersion"].as_str() {
        let actual = current["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("");
        if rv != actual {
            return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}", resource_name(t))));
        }
    }
    let dry = is_dry_run(query)
        || opts["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d == "All"));
    if dry {
        return Ok(json_response(StatusCode::OK, &current));
    }
    if opts["propagationPolicy"].as_str() == Some("Orphan")
        || opts["orphanDependents"].as_bool() == Some(true)
    {
        super::gc::orphan_dependents(&st.store, current["metadata"]["uid"].as_str().unwrap_or(""));
    }
    let is_pod = t.key.group.is_empty() && t.key.plural == "pods";
    let deleted = if is_pod {
        let grace = opts["gracePeriodSeconds"]
            .as_i64()
            .or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
        super::workloads::delete_pod(&st.store, ns.unwrap_or(""), name, grace)
    } else {
        st.store.delete(&t.key, ns, name)
    }
    .map_err(|e| map_store(t, e))?;
    let pending = deleted["metadata"]["deletionTimestamp"].is_string()
        && deleted["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    if pending || (t.key.group.is_empty() && matches!(t.key.plural.as_str(), "pods" | "namespaces"))
    {
        return Ok(json_response(StatusCode::OK, &deleted));
    }
    let mut details =
        json!({"name": name, "kind": t.key.plural, "uid": deleted["metadata"]["uid"]});
    if !t.key.group.is_empty() {
        details["group"] = json!(t.key.group);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    ))
}

fn delete_collection(
    st: &ApiState,
    t: &ResourceType,
    target: &Target,
    query: &Query,
) -> ApiResult<Response> {
    let (labels, fields) = selectors(query)?;
    let filter = |o: &Value| labels.matches(&o["metadata"]["labels"]) && fields.matches(o);
    let page = st.store.list_page(
        &t.key,
        target.namespace.as_deref(),
        None,
        None,
        false,
        &filter,
    );
    let mut deleted = Vec::with_capacity(page.items.len());
    for item in &page.items {
        let ns = item["metadata"]["namespace"].as_str();
        let name = item["metadata"]["name"].as_str().unwrap_or("");
        if is_dry_run(query) {
            deleted.push((**item).clone());
            continue;
        }
        let result = if t.key.group.is_empty() && t.key.plural == "pods" {
            super::workloads::delete_pod(&st.store, ns.unwrap_or(""), name, None)
        } else {
            st.store.delete(&t.key, ns, name)
        };
        match result {
            Ok(o) => deleted.push((*o).clone()),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(map_store(t, e)),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": t.list_kind, "apiVersion": t.api_version(), "metadata": {"resourceVersion": st.store.resource_version().to_string()}, "items": deleted}),
    ))
}

/// Whether the client asked for metadata only (`as=PartialObjectMetadata[List]`, what
/// kube-rs `list_metadata`/`metadata_watcher` send).
pub fn wants_metadata(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=PartialObjectMetadata"))
}

/// An object's `PartialObjectMetadata` form.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// The `409` a real server answers when a write names a `metadata.uid` other than the
/// object's (the object was deleted and recreated under the same name).
fn uid_precondition(
    t: &ResourceType,
    name: &str,
    current: &Value,
    sent: &Value,
) -> Option<ApiError> {
    let want = sent["metadata"]["uid"].as_str().filter(|u| !u.is_empty())?;
    let actual = current["metadata"]["uid"].as_str().unwrap_or("");
    (want != actual).then(|| {
        let mut d = json!({"name": name, "kind": t.key.plural});
        if !t.key.group.is_empty() {
            d["group"] = json!(t.key.group);
        }
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {actual}",
                resource_name(t)
            ),
        )
        .details(d)
    })
}

//! The verbs on resources: get, list, watch, create, update, patch, delete, deletecollection,
//! with the `status` subresource rules, admission checks (names, namespaces) and field
//! management.

use super::patch;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{json_response, ApiError, ApiResult};
use super::{metrics, protobuf, table, watch, ApiState, Query, Target};
use crate::store::{ResourceKey, ResourceType, StoreError};
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
    Err(ApiError::invalid(&t.kind, name, "metadata.name", &detail))
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
    match (method, target.name.as_deref()) {
        (Method::GET, _) if watch => watch::serve(st, &t, &target, &query, accept),
        (Method::GET, Some(name)) => get(st, &t, &target, name, accept),
        (Method::GET, None) => list(st, &t, &target, &query, accept),
        (Method::POST, None) => create(st, &t, &target, &query, &media, &body, &ua),
        (Method::PUT, Some(name)) => update(st, &t, &target, name, &query, &media, &body, &ua, sub),
        (Method::PATCH, Some(name)) => {
            patch(st, &t, &target, name, &query, &media, &body, &ua, sub)
        }
        (Method::DELETE, Some(name)) if sub.is_none() => {
            delete(st, &t, &target, name, &query, &body)
        }
        (Method::DELETE, None) => delete_collection(st, &t, &target, &query),
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
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

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: Option<String>,
    name: String,
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
    let after = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c.trim_end_matches('='))
                .map_err(|_| ApiError::bad_request("continue key is not valid: not base64"))?;
            let tok: ContinueToken = serde_json::from_slice(&raw).map_err(|_| {
                ApiError::bad_request(
                    "continue key is not valid: not a continue token of this server",
                )
            })?;
            Some((tok.ns, tok.name))
        }
        None => None,
    };
    let no_selector = labels.is_empty() && fields.is_empty();
    let filter = |o: &Value| labels.matches(&o["metadata"]["labels"]) && fields.matches(o);
    let page = st.store.list_page(
        &t.key,
        target.namespace.as_deref(),
        after.as_ref(),
        limit,
        no_selector,
        &filter,
    );
    let rv = page.resource_version.to_string();
    let cont = page.next_after.map(|(ns, name)| {
        let tok = serde_json::to_vec(&ContinueToken {
            rv: page.resource_version,
            ns,
            name,
        })
        .unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok)
    });
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
fn admit_new(
    st: &ApiState,
    t: &ResourceType,
    target: &Target,
    mut obj: Value,
    manager: &str,
) -> ApiResult<Value> {
    check_identity(t, target, &mut obj)?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let generate = obj["metadata"]["generateName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        if generate.is_empty() {
            return Err(ApiError::invalid(
                &t.kind,
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
    apply_schema_defaults(st, t, &mut obj);
    if obj["metadata"]["managedFields"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        patch::track_update(None, &mut obj, manager, None);
    }
    Ok(obj)
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
) -> ApiResult<Response> {
    let obj = decode_body(media, body)?;
    let obj = admit_new(st, t, target, obj, &manager(ua, query))?;
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
) -> ApiResult<Response> {
    let mut obj = decode_body(media, body)?;
    check_identity(t, target, &mut obj)?;
    apply_schema_defaults(st, t, &mut obj);
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
) -> ApiResult<Response> {
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
    let schema = crd_schema(st, t);
    let dry = is_dry_run(query);
    let ns = target.namespace.as_deref();
    // Server-side apply creates what does not exist yet.
    if kind == PatchType::Apply && sub.is_none() && st.store.get(&t.key, ns, name).is_none() {
        let created =
            patch::apply(None, &applied, &manager, force, sub).map_err(|c| ssa_conflict(&c))?;
        let obj = admit_new(st, t, target, created, &manager)?;
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
                Ok(n) => n,
                Err(c) => return fail(ssa_conflict(&c), &mut failure),
            },
        };
        if !patched.is_object() || !(patched["metadata"].is_object() || patched["metadata"].is_null()) {
            return fail(ApiError::bad_request("the patched object is not a Kubernetes object"), &mut failure);
        }
        if patched["metadata"]["name"].as_str() != Some(name) {
            return fail(
                ApiError::invalid(&t.kind, name, "metadata.name", "Invalid value: the name of an object cannot be changed"),
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
        let mut check = patched.clone();
        if let Err(e) = check_identity(t, &Target { name: Some(name.to_string()), ..target.clone() }, &mut check) {
            return fail(e, &mut failure);
        }
        let mut next = apply_subresource_rule(t, cur, check, sub);
        if let Some(schema) = &schema {
            default_into(&mut next, schema, 0);
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
    let deleted = st
        .store
        .delete(&t.key, ns, name)
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
        match st.store.delete(&t.key, ns, name) {
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

/// Applies the `default`s of a custom resource's OpenAPI schema, as a real API server does
/// for structural schemas: missing properties with a default get it, recursively through
/// present objects and array items.
pub fn apply_schema_defaults(st: &ApiState, t: &ResourceType, obj: &mut Value) {
    if let Some(schema) = crd_schema(st, t) {
        default_into(obj, &schema, 0);
    }
}

/// The OpenAPI schema of a custom resource's served version (None for built-in kinds).
/// Reads the store: never call it while inside `Store::mutate`.
pub fn crd_schema(st: &ApiState, t: &ResourceType) -> Option<Value> {
    if super::builtin::is_builtin(&t.key) {
        return None;
    }
    let crd_name = format!("{}.{}", t.key.plural, t.key.group);
    let crd = st.store.get(&crate::store::crd_key(), None, &crd_name)?;
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["name"].as_str() == Some(t.version.as_str()))
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
}

fn default_into(v: &mut Value, schema: &Value, depth: usize) {
    if depth > 64 {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, ps) in props {
                    if !m.contains_key(k) {
                        if let Some(d) = ps.get("default") {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(child) = m.get_mut(k) {
                        default_into(child, ps, depth + 1);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    default_into(child, ap, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for item in items {
                    default_into(item, is, depth + 1);
                }
            }
        }
        _ => {}
    }
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

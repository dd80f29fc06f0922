//! Kubernetes `Status` objects: every error the API server answers is one of these, with the
//! code, reason and message a real API server gives for the same request.

use crate::store::StoreError;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds for `Retry-After` (429/503).
    pub retry_after: Option<u64>,
    /// The Status's `metadata.continue` (on an expired list continuation: a token that
    /// continues at the latest state).
    pub list_continue: Option<Box<str>>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: json!({}),
            retry_after: None,
            list_continue: None,
        }
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(plural: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{plural} \"{name}\" not found"))
            .details(json!({"name": name, "kind": plural}))
    }

    pub fn unknown_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"),
        )
    }

    /// 422 with one cause, as field validation failures are reported.
    pub fn invalid(kind: &str, name: &str, field: &str, detail: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field}: {detail}"),
        )
        .details(json!({
            "name": name,
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
        }))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": match &self.list_continue {
                Some(c) => json!({"continue": c}),
                None => json!({}),
            },
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        });
        if self.reason.is_empty() {
            if let Some(m) = status.as_object_mut() {
                m.remove("reason");
            }
        }
        status
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::NotFound { kind, name } => ApiError::not_found(&kind, &name),
            StoreError::AlreadyExists { kind, name } => {
                ApiError::new(409, "AlreadyExists", message)
                    .details(json!({"name": name, "kind": kind}))
            }
            StoreError::Conflict { plural, name } => ApiError::new(409, "Conflict", message)
                .details(json!({"name": name, "kind": plural})),
            StoreError::Invalid(_) => ApiError::new(422, "Invalid", message),
            StoreError::UnknownResource => ApiError::unknown_resource(),
            StoreError::Gone { .. } => ApiError::new(410, "Expired", message),
            StoreError::Forbidden(_) => ApiError::new(403, "Forbidden", message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut resp = (
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON response with the given status code.
pub fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = (code, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

//! OpenAI-style error responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered as `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// One line naming the field and the value.
    pub message: String,
    /// OpenAI error type.
    pub kind: &'static str,
    /// The offending request field, if any.
    pub param: Option<String>,
    /// Seconds for Retry-After (503 only).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A 400 about request field `param`.
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: (!param.is_empty()).then(|| param.to_string()),
            retry_after: None,
        }
    }

    /// A 503 (loading, queue full, shutting down) with Retry-After.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_overloaded",
            param: None,
            retry_after: Some(1),
        }
    }

    /// A 404 for an unknown path.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "not_found_error",
            param: None,
            retry_after: None,
        }
    }

    /// A 500: the engine failed (never caused by a client's input).
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            retry_after: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.status.as_u16(),
            }
        })
    }
}

impl From<crate::Error> for ApiError {
    /// Library errors reached from a request are about its input.
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::InvalidInput(m) | crate::Error::Tokenizer(m) => ApiError::bad("", m),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

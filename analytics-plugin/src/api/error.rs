//! The one error shape of the analytics API:
//! `{"error": {"code", "message", "parameter"}}`. Bad input is a 400 that
//! quotes the value and says what is allowed; storage down is a 503 with the
//! reason; anything internal is logged and answered without details.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::storage::StorageError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub parameter: Option<String>,
    /// Seconds for a `Retry-After` header (503s that pass).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn bad_parameter(parameter: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_parameter",
            message: message.into(),
            parameter: Some(parameter.to_owned()),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            parameter: None,
            retry_after: None,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "storage_unavailable",
            message: message.into(),
            parameter: None,
            retry_after: Some(5),
        }
    }

    /// The database is still being opened at start-up (connecting,
    /// migrating): not a failure, and soon over.
    pub fn starting() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "starting",
            message: "analytics database is still opening (connecting and migrating at start-up); retry in a second"
                .to_owned(),
            parameter: None,
            retry_after: Some(1),
        }
    }

    pub fn conflict(parameter: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: message.into(),
            parameter: Some(parameter.to_owned()),
            retry_after: None,
        }
    }

    pub fn internal() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; the details are in the server log".to_owned(),
            parameter: None,
            retry_after: None,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message, "parameter": self.parameter}})
    }

    /// Maps a storage failure: unreachable is a 503 with the reason; any
    /// other database error is logged by the caller and answered as a 500.
    pub fn from_storage(error: &StorageError) -> Self {
        match error {
            StorageError::Unreachable(reason) => {
                Self::unavailable(format!("analytics database unreachable: {reason}"))
            }
            StorageError::Timeout(ms) => {
                Self::unavailable(format!("analytics database did not answer within {ms} ms"))
            }
            _ => Self::internal(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

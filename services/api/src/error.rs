//! The API's one error type and the `{"error":{"code","message"}}` body every failure
//! answers with, including axum's own rejections (bad JSON, wrong content type, body too
//! large, bad path or query), unknown routes and wrong methods.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use keytrap_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// Error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `invalid_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, `unsupported_media_type`,
    /// `method_not_allowed`, `unavailable`, `internal`.
    pub code: &'static str,
    /// What went wrong, for a human.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("database unavailable")]
    Unavailable,
    /// A concurrent change won; nothing was changed and the request may be retried.
    #[error(
        "the database is busy with a concurrent change; nothing was changed, retry the request"
    )]
    Busy,
    /// Logged with its context; the client sees only "internal error".
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable | ApiError::Busy => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::NotFound(format!("{what} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = (
            status,
            axum::Json(ErrorBody {
                error: ErrorDetail { code, message },
            }),
        )
            .into_response();
        if matches!(self, ApiError::Busy) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            StoreError::Busy(e) => {
                tracing::warn!(error = %e, "a concurrent change won; the client is told to retry");
                ApiError::Busy
            }
            StoreError::Corrupt(_) | StoreError::Backend(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ),
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge("request body is too large".into())
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::Invalid(format!(
                "request body is not valid JSON: {}",
                source_text(&e)
            )),
            JsonRejection::JsonDataError(e) => ApiError::Invalid(format!(
                "request body does not match the expected shape: {}",
                source_text(&e)
            )),
            other => ApiError::Invalid(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::Invalid(format!("invalid path parameter: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        match r {
            QueryRejection::FailedToDeserializeQueryString(e) => {
                ApiError::Invalid(format!("invalid query string: {}", source_text(&e)))
            }
            other => ApiError::Invalid(other.body_text()),
        }
    }
}

/// The first cause below axum's generic wrapper: serde's own words with the field path
/// ("exchange: unknown variant `ftx`, expected one of ...").
fn source_text(e: &dyn std::error::Error) -> String {
    let top = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let text = err.to_string();
        if text != top {
            return text;
        }
        cur = err.source();
    }
    top
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answer(e: StoreError) -> (StatusCode, Option<String>, serde_json::Value) {
        let resp = ApiError::from(e).into_response();
        let status = resp.status();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = futures_body(resp);
        (status, retry, body)
    }

    fn futures_body(resp: Response) -> serde_json::Value {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(resp.into_body(), 1 << 16))
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_lost_race_is_a_retryable_503_and_other_database_errors_a_500() {
        let io =
            || Box::new(std::io::Error::other("x")) as Box<dyn std::error::Error + Send + Sync>;
        let (status, retry, body) = answer(StoreError::Busy(io()));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(body["error"]["message"].as_str().unwrap().contains("retry"));

        let (status, retry, body) = answer(StoreError::Backend(io()));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry, None);
        assert_eq!(
            body["error"]["message"], "internal error",
            "details stay in the log"
        );
    }
}

//! Extractors: axum's `Json`, `Path` and `Query` with their rejections mapped to
//! [`ApiError`], and [`Auth`], the caller's API token.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use keytrap_store::{ApiToken, Scope};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::AppState;

/// `axum::Json` whose rejections answer in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(v))
    }
}

pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(v))
    }
}

pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(v))
    }
}

/// The authenticated caller: the API token presented as `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Auth(pub ApiToken);

impl Auth {
    /// `403 forbidden` unless the token has `scope` (admin has every scope).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.0.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token lacks the {:?} scope",
                scope.as_str()
            )))
        }
    }

    pub fn tenant(&self) -> uuid::Uuid {
        self.0.tenant_id
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "missing Authorization header; send Authorization: Bearer <token>",
            ))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or(ApiError::Unauthorized(
                "malformed Authorization header; send Authorization: Bearer <token>",
            ))?;
        let digest = state.keys.token_digest(token);
        let found = state.db.token_by_digest(&digest).await?;
        match found {
            // The lookup is by a keyed digest nobody can compute without the master key;
            // comparing the stored digest in constant time is defence in depth against a
            // backend that matched loosely (collation, truncation).
            Some(t) if bool::from(digest.ct_eq(&t.digest)) => Ok(Auth(t)),
            _ => Err(ApiError::Unauthorized("invalid or revoked token")),
        }
    }
}

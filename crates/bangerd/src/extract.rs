//! Extractors whose rejections are our error body: axum's own `Path` and
//! `Query` answer a malformed path segment or query string with plain text,
//! which breaks the API's contract (every failure is an `ErrorBody`).

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use banger_api::ApiError;
use serde::de::DeserializeOwned;

use crate::api::Failure;

/// The `{reference}` segment of a route.
#[derive(Debug)]
pub(crate) struct Reference(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Reference {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(r)| Reference(r))
            .map_err(|e| {
                Failure(ApiError::invalid(format!(
                    "invalid path: {}",
                    e.body_text()
                )))
            })
    }
}

/// A query string decoded into `T`.
#[derive(Debug)]
pub(crate) struct QueryOf<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryOf<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryOf(q))
            .map_err(|e| {
                Failure(ApiError::invalid(format!(
                    "invalid query: {}",
                    e.body_text()
                )))
            })
    }
}

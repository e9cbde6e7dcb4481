//! Events of a streamed (NDJSON) response.
//!
//! A long operation answers `200` with `Content-Type: application/x-ndjson`
//! and writes one [`Event`] per line. The stream always ends with exactly one
//! `result` or `error` event; a stream that ends without one means the daemon
//! died mid-operation.

use serde::{Deserialize, Serialize};

use crate::ApiError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A named step began, e.g. `prepare_work_disk`.
    Stage { stage: String, detail: String },
    /// Progress within the current stage; `total` is absent when unknown.
    Progress {
        stage: String,
        current: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
    },
    /// A free-form line the user should see (warnings, the chosen VMM).
    Message { text: String },
    /// The operation succeeded; `value` is what the plain route would return.
    Result { value: serde_json::Value },
    /// The operation failed. Nothing it made is left behind.
    Error { error: ApiError },
    /// An event of a kind this build does not know (from a newer daemon);
    /// a client skips it. Never sent.
    #[serde(other)]
    Unknown,
}

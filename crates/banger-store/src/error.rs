//! The store's one error type.

use std::path::PathBuf;

/// Why a store operation failed.
///
/// Constraint violations are turned into the variant a caller can act on
/// (`Duplicate`, `InUse`, `NotFound`); only unexpected SQLite failures stay
/// as `Sqlite`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No row with this key. `kind` is `vm`, `image` or `kernel`.
    #[error("{kind} {key} not found")]
    NotFound { kind: &'static str, key: String },

    /// A unique column already holds `value`.
    #[error("{kind} with {field} {value} already exists")]
    Duplicate {
        kind: &'static str,
        field: String,
        value: String,
    },

    /// The row is referenced by other rows (VM names in `users`).
    #[error("{kind} {key} is in use by {}", users.join(", "))]
    InUse {
        kind: &'static str,
        key: String,
        users: Vec<String>,
    },

    /// A stored value no longer parses, e.g. JSON written by a newer banger.
    #[error("corrupt store: {what}")]
    Corrupt { what: String },

    #[error("cannot open store {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("store {op} failed")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error("store schema migration failed")]
    Migrate(#[source] rusqlite_migration::Error),
}

/// Shorthand for the store's results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

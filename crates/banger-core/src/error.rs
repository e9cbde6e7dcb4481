//! The services' error: an [`ApiError`] (code + one-line message) built from
//! the typed errors of the crates below, keeping their whole cause chain in
//! the message so the user sees why, not just what.

pub use banger_api::ApiError as CoreError;
use banger_api::ErrorCode;

pub type CoreResult<T> = Result<T, CoreError>;

/// `outer: cause: cause` from an error and its sources, skipping causes
/// whose text the outer message already contains.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg.replace('\n', " ")
}

pub fn internal(context: &str, err: &dyn std::error::Error) -> CoreError {
    CoreError::new(ErrorCode::Internal, format!("{context}: {}", chain(err)))
}

/// A store error with the code the user should see: missing rows are
/// `not_found`, UNIQUE violations `already_exists`, foreign-key refusals
/// `conflict`.
pub fn store_err(e: banger_store::StoreError) -> CoreError {
    use banger_store::StoreError as S;
    let code = match &e {
        S::NotFound { .. } => ErrorCode::NotFound,
        S::Duplicate { .. } => ErrorCode::AlreadyExists,
        S::InUse { .. } => ErrorCode::Conflict,
        _ => ErrorCode::Internal,
    };
    CoreError::new(code, chain(&e))
}

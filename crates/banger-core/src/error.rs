//! The services' error: an [`ApiError`] (code + one-line message) built from
//! the typed errors of the crates below, keeping their whole cause chain in
//! the message so the user sees why, not just what.
//!
//! A full filesystem is recognised here, whatever reported it (an
//! `io::Error`, mkfs.ext4, the fakeroot worker, SQLite), and becomes the one
//! `no_space` error naming the directory that filled up.

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

pub fn internal(context: &str, err: &(dyn std::error::Error + 'static)) -> CoreError {
    if is_no_space(err) {
        return CoreError::new(
            ErrorCode::NoSpace,
            format!("no space left while trying to {context}"),
        );
    }
    CoreError::new(ErrorCode::Internal, format!("{context}: {}", chain(err)))
}

/// What tools print when a write hit a full filesystem or a quota: the
/// strerror texts of ENOSPC and EDQUOT, and SQLite's SQLITE_FULL.
const NO_SPACE_TEXTS: [&str; 3] = [
    "No space left on device",
    "Disk quota exceeded",
    "database or disk is full",
];

/// Whether `err` or one of its causes says the filesystem is full: an
/// `io::Error` of ENOSPC or EDQUOT, or a tool's message (mkfs.ext4, the
/// fakeroot worker, SQLite) quoting one.
pub fn is_no_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        let text = e.to_string();
        if NO_SPACE_TEXTS.iter().any(|t| text.contains(t)) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// `err` as the user should see it: `no space left on <dir>` (code
/// `no_space`) when the filesystem holding `dir` filled up, whichever step
/// hit it; else `code` with the whole cause chain.
pub fn classify(
    err: &(dyn std::error::Error + 'static),
    code: ErrorCode,
    dir: &std::path::Path,
) -> CoreError {
    if is_no_space(err) {
        return CoreError::no_space(dir.display());
    }
    CoreError::new(code, chain(err))
}

/// A store error with the code the user should see: missing rows are
/// `not_found`, UNIQUE violations `already_exists`, foreign-key refusals
/// `conflict`.
pub fn store_err(e: banger_store::StoreError) -> CoreError {
    use banger_store::StoreError as S;
    if is_no_space(&e) {
        return CoreError::new(
            ErrorCode::NoSpace,
            format!("no space left for the database: {}", chain(&e)),
        );
    }
    let code = match &e {
        S::NotFound { .. } => ErrorCode::NotFound,
        S::Duplicate { .. } => ErrorCode::AlreadyExists,
        S::InUse { .. } => ErrorCode::Conflict,
        _ => ErrorCode::Internal,
    };
    CoreError::new(code, chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("mkfs.ext4 failed on /d/vms/x/work.ext4: exit 1: {0}")]
    struct ToolFailed(String);

    #[test]
    fn no_space_is_recognised_from_io_errors_and_tool_messages() {
        assert!(is_no_space(&std::io::Error::from_raw_os_error(28)));
        assert!(is_no_space(&std::io::Error::from_raw_os_error(122)));
        assert!(!is_no_space(&std::io::Error::from_raw_os_error(2)));
        let tool = ToolFailed("ext2fs_write: No space left on device".into());
        assert!(is_no_space(&tool));
        assert!(!is_no_space(&ToolFailed("bad superblock".into())));
        let e = classify(&tool, ErrorCode::Internal, std::path::Path::new("/d/vms"));
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::NoSpace, "no space left on /d/vms")
        );
        let e = classify(
            &ToolFailed("bad superblock".into()),
            ErrorCode::Internal,
            std::path::Path::new("/d/vms"),
        );
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("bad superblock"), "{}", e.message);
    }
}

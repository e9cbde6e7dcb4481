//! The services' error, owned by the core: [`CoreError`] says what went
//! wrong (bad input, a missing or ambiguous object, a conflict, a full
//! filesystem, a fault on our side) with a one-line message that keeps the
//! whole cause chain, so the user sees why, not just what.
//!
//! A full filesystem is recognised here, whatever reported it (an
//! `io::Error`, mkfs.ext4, the fakeroot worker, SQLite), and becomes the one
//! [`CoreError::NoSpace`] naming the directory that filled up.
//!
//! The core does not speak the wire: the one mapping to the wire's
//! [`ApiError`] (its code, hence its HTTP status) is the `From` impl at the
//! end of this file, which bangerd applies at its edge.

use banger_api::{ApiError, ErrorCode};

pub type CoreResult<T> = Result<T, CoreError>;

/// What went wrong in a service call. Messages are one line, lowercase,
/// causes joined by `": "`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The caller's input is malformed, out of range or unusable (not a
    /// kernel, a corrupt package, an unreadable source path).
    #[error("{0}")]
    InvalidArgument(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A name or id prefix matched more than one object.
    #[error("{0}")]
    Ambiguous(String),
    /// An object of that name exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The operation does not fit the object's state (in use, running...).
    #[error("{0}")]
    Conflict(String),
    /// The filesystem holding `path` is full (ENOSPC, EDQUOT, SQLITE_FULL).
    /// Nothing was left half-made; freeing space and retrying works.
    #[error("no space left on {path}")]
    NoSpace { path: String },
    /// A write hit a full filesystem where only the step is known.
    #[error("no space left while trying to {context}")]
    NoSpaceWhile { context: String },
    /// Our side failed: a tool, an I/O call under the data directory, an
    /// invariant. `cause` is the failing error's chain, when there was one.
    #[error("{context}{}", cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Internal {
        context: String,
        cause: Option<String>,
    },
}

/// The class of a [`CoreError`] without its message: what
/// [`classify`] falls back to when the filesystem is not full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    Ambiguous,
    AlreadyExists,
    Conflict,
    NoSpace,
    Internal,
}

impl CoreError {
    pub fn invalid(message: impl Into<String>) -> Self {
        CoreError::InvalidArgument(message.into())
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        CoreError::NotFound(message.into())
    }
    pub fn ambiguous(message: impl Into<String>) -> Self {
        CoreError::Ambiguous(message.into())
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        CoreError::AlreadyExists(message.into())
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        CoreError::Conflict(message.into())
    }
    /// The filesystem holding `path` is full.
    pub fn no_space(path: impl std::fmt::Display) -> Self {
        CoreError::NoSpace {
            path: path.to_string(),
        }
    }
    /// A fault on our side with no error value to quote (a broken
    /// invariant, a tool's refusal); with an error, use the free
    /// [`internal`], which also spots a full disk.
    pub fn internal(message: impl Into<String>) -> Self {
        CoreError::Internal {
            context: message.into(),
            cause: None,
        }
    }

    /// `kind` with `message`; `NoSpace` takes the message as its path.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let m = message.into();
        match kind {
            ErrorKind::InvalidArgument => CoreError::InvalidArgument(m),
            ErrorKind::NotFound => CoreError::NotFound(m),
            ErrorKind::Ambiguous => CoreError::Ambiguous(m),
            ErrorKind::AlreadyExists => CoreError::AlreadyExists(m),
            ErrorKind::Conflict => CoreError::Conflict(m),
            ErrorKind::NoSpace => CoreError::NoSpace { path: m },
            ErrorKind::Internal => CoreError::internal(m),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            CoreError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            CoreError::NotFound(_) => ErrorKind::NotFound,
            CoreError::Ambiguous(_) => ErrorKind::Ambiguous,
            CoreError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            CoreError::Conflict(_) => ErrorKind::Conflict,
            CoreError::NoSpace { .. } | CoreError::NoSpaceWhile { .. } => ErrorKind::NoSpace,
            CoreError::Internal { .. } => ErrorKind::Internal,
        }
    }

    /// The one-line message the user sees.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// The wire code of each kind: the only place the core's errors meet the
/// API's codes (and, through [`ErrorCode::http_status`], HTTP statuses).
impl From<ErrorKind> for ErrorCode {
    fn from(k: ErrorKind) -> ErrorCode {
        match k {
            ErrorKind::InvalidArgument => ErrorCode::InvalidArgument,
            ErrorKind::NotFound => ErrorCode::NotFound,
            ErrorKind::Ambiguous => ErrorCode::Ambiguous,
            ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
            ErrorKind::Conflict => ErrorCode::Conflict,
            ErrorKind::NoSpace => ErrorCode::NoSpace,
            ErrorKind::Internal => ErrorCode::Internal,
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        ApiError::new(e.kind().into(), e.to_string())
    }
}

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

/// A fault on our side while trying to `context`, quoting `err`'s chain;
/// a full filesystem instead, when that is what `err` says.
pub fn internal(context: &str, err: &(dyn std::error::Error + 'static)) -> CoreError {
    if is_no_space(err) {
        return CoreError::NoSpaceWhile {
            context: context.to_string(),
        };
    }
    CoreError::Internal {
        context: context.to_string(),
        cause: Some(chain(err)),
    }
}

/// `no space left on <dir>` when the filesystem filled up, else an
/// internal error saying what failed: for disk work under `dir`.
pub fn disk_error(
    what: &str,
    err: &(dyn std::error::Error + 'static),
    dir: &std::path::Path,
) -> CoreError {
    if is_no_space(err) {
        return CoreError::no_space(dir.display());
    }
    internal(what, err)
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

/// `err` as the user should see it: `no space left on <dir>` when the
/// filesystem holding `dir` filled up, whichever step hit it; else `kind`
/// with the whole cause chain.
pub fn classify(
    err: &(dyn std::error::Error + 'static),
    kind: ErrorKind,
    dir: &std::path::Path,
) -> CoreError {
    if is_no_space(err) {
        return CoreError::no_space(dir.display());
    }
    CoreError::new(kind, chain(err))
}

/// A store error as the user should see it: missing rows are `NotFound`,
/// UNIQUE violations `AlreadyExists`, foreign-key refusals `Conflict`, a
/// full disk `NoSpaceWhile`, the rest `Internal`.
pub fn store_err(e: banger_store::StoreError) -> CoreError {
    use banger_store::StoreError as S;
    if is_no_space(&e) {
        return CoreError::NoSpaceWhile {
            context: format!("write the database ({})", chain(&e)),
        };
    }
    let kind = match &e {
        S::NotFound { .. } => ErrorKind::NotFound,
        S::Duplicate { .. } => ErrorKind::AlreadyExists,
        S::InUse { .. } => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    };
    CoreError::new(kind, chain(&e))
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
        let e = classify(&tool, ErrorKind::Internal, std::path::Path::new("/d/vms"));
        assert_eq!(e, CoreError::no_space("/d/vms"));
        assert_eq!(e.to_string(), "no space left on /d/vms");
        let e = classify(
            &ToolFailed("bad superblock".into()),
            ErrorKind::Internal,
            std::path::Path::new("/d/vms"),
        );
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.to_string().contains("bad superblock"), "{e}");
    }

    #[test]
    fn internal_quotes_the_cause_or_reports_a_full_disk() {
        let e = internal("write /d/x", &std::io::Error::from_raw_os_error(13));
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(e.to_string(), "write /d/x: Permission denied (os error 13)");
        let e = internal("write /d/x", &std::io::Error::from_raw_os_error(28));
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert_eq!(e.to_string(), "no space left while trying to write /d/x");
        assert_eq!(CoreError::internal("lost").to_string(), "lost");
    }

    /// Every kind reaches the wire with its own code and status, and the
    /// message unchanged.
    #[test]
    fn each_error_maps_to_its_wire_code_and_status() {
        let cases = [
            (CoreError::invalid("bad"), "invalid_argument", 400),
            (CoreError::not_found("gone"), "not_found", 404),
            (CoreError::ambiguous("two"), "ambiguous", 409),
            (CoreError::already_exists("dup"), "already_exists", 409),
            (CoreError::conflict("busy"), "conflict", 409),
            (CoreError::no_space("/d/kernels"), "no_space", 507),
            (
                CoreError::NoSpaceWhile {
                    context: "write /d/x".into(),
                },
                "no_space",
                507,
            ),
            (CoreError::internal("broke"), "internal", 500),
            (
                internal("run mkfs.ext4", &ToolFailed("exit 1".into())),
                "internal",
                500,
            ),
        ];
        for (core, code, status) in cases {
            let message = core.to_string();
            let wire = ApiError::from(core);
            assert_eq!(wire.code.as_str(), code, "{message}");
            assert_eq!(wire.http_status(), status, "{message}");
            assert_eq!(wire.message, message);
        }
        // Every kind is covered by one known code, and the round trip
        // through `new` keeps the kind.
        let kinds = [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::Ambiguous,
            ErrorKind::AlreadyExists,
            ErrorKind::Conflict,
            ErrorKind::NoSpace,
            ErrorKind::Internal,
        ];
        let mut codes: Vec<String> = kinds
            .iter()
            .map(|k| {
                assert_eq!(CoreError::new(*k, "m").kind(), *k);
                ErrorCode::from(*k).to_string()
            })
            .collect();
        codes.sort_unstable();
        let mut known: Vec<String> = ErrorCode::KNOWN.iter().map(|c| c.to_string()).collect();
        known.sort_unstable();
        assert_eq!(codes, known);
    }
}

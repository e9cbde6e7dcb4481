//! Errors of registry pulls and the blob cache. Each variant names the
//! reference, registry, blob or path it is about.

use std::path::PathBuf;

/// Errors from resolving, pulling or pruning images.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The image reference does not parse (`reason` says why).
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },

    /// The `--platform` string is malformed or names something banger cannot run.
    #[error("invalid platform {platform:?}: {reason}")]
    BadPlatform { platform: String, reason: String },

    /// A digest that is not `sha256:` followed by 64 lowercase hex digits.
    #[error("unsupported or malformed digest {digest:?}")]
    BadDigest { digest: String },

    /// A blob or manifest whose content does not hash to its digest.
    #[error("{what} {digest}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// `manifest`, `config` or `layer N`.
        what: String,
        digest: String,
        expected: String,
        actual: String,
    },

    /// A blob longer or shorter than its descriptor says.
    #[error("{what} {digest}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        digest: String,
        expected: u64,
        actual: u64,
    },

    /// The index has no manifest for the requested platform.
    #[error("{reference}: no image for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },

    /// A single-platform image built for another platform than requested.
    #[error("{reference}: image is for {actual}, not {requested}")]
    PlatformMismatch {
        reference: String,
        requested: String,
        actual: String,
    },

    /// A manifest, config or layer media type this puller does not handle.
    #[error("{what}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { what: String, media_type: String },

    /// A manifest or config that is not the JSON it claims to be.
    #[error("{what}: malformed: {detail}")]
    Malformed { what: String, detail: String },

    /// The registry rejected the credentials or demanded some.
    #[error("{registry}: authentication failed: {detail}")]
    Auth { registry: String, detail: String },

    /// The registry answered with an error or could not be reached.
    #[error("{registry}: {op}")]
    Registry {
        registry: String,
        op: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },

    /// The docker config file is unreadable or not JSON.
    #[error("docker config {}: {detail}", path.display())]
    DockerConfig { path: PathBuf, detail: String },

    /// A `docker-credential-*` helper named by the docker config is missing,
    /// failed, hung or answered something unusable. `detail` never holds
    /// the secret.
    #[error("credential helper docker-credential-{helper} for {registry}: {detail}")]
    CredentialHelper {
        helper: String,
        registry: String,
        detail: String,
    },

    /// Filesystem work in the blob cache failed.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl OciError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OciError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

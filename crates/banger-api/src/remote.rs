//! What a client on another host needs that a local one reads from disk:
//! uploads (an image's root filesystem, a kernel, sent as the request body
//! instead of named by a path the daemon reads) and a VM's ssh access
//! material (the managed key and the VM's pinned host key), so `banger
//! --host ssh://...` works as the local CLI does.

use serde::{Deserialize, Serialize};

/// Query of `POST /v1/images/upload`: the body is the root filesystem as a
/// tar stream (plain, or a `.tar.gz`/`.tar.zst` as it is on disk).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ImageUploadQuery {
    /// The new image's name.
    pub name: String,
    /// Where the client read it (shown as the image's source).
    #[serde(default)]
    pub source: Option<String>,
    /// The client tarred a directory (recorded as a directory source).
    #[serde(default)]
    pub directory: bool,
}

/// Query of `POST /v1/kernels/upload`: the body is a tar holding `kernel`
/// (a bzImage or vmlinux, or with `deb` a `linux-image-*` package) and
/// optionally `initrd`, as regular files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct KernelUploadQuery {
    #[serde(default)]
    pub name: Option<String>,
    /// `kernel` is a Debian kernel package: kernel + modules.
    #[serde(default)]
    pub deb: bool,
}

/// `GET /v1/vms/{reference}/ssh`: how to log in to a VM with OpenSSH from
/// wherever the client is, still with its host key pinned (never trust on
/// first use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmSshAccess {
    /// The user to log in as.
    pub user: String,
    /// The name the VM's known_hosts line carries for ssh's `HostKeyAlias`.
    pub host_key_alias: String,
    /// The VM's lines of the daemon's known_hosts.
    pub known_hosts: Vec<String>,
    /// The daemon's managed user key (OpenSSH private key format): every
    /// VM of this daemon authorizes it. Only the daemon's owner can ask
    /// (the socket is theirs alone), and they can read it from disk anyway.
    pub private_key: String,
    /// Its public half.
    pub public_key: String,
}

//! Request bodies. Every one rejects unknown fields so a typo in a client is
//! an error, not a silently ignored setting.

use serde::{Deserialize, Serialize};

use crate::ByteSize;

/// `POST /v1/kernels`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KernelImportRequest {
    /// Absolute path of a kernel image, or of a `linux-image-*.deb` when `deb`.
    pub path: String,
    #[serde(default)]
    pub initrd: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Treat `path` as a Debian kernel package: kernel + modules.
    #[serde(default)]
    pub deb: bool,
}

/// `POST /v1/kernels/pull`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct KernelPullRequest {
    /// The catalog entry (`banger kernel catalog`).
    pub entry: String,
    /// Kernel name in banger; default: the entry's name.
    pub name: Option<String>,
}

/// `POST /v1/images`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImageImportRequest {
    /// Absolute path of a root directory or a rootfs tarball.
    pub path: String,
    pub name: String,
}

/// `POST /v1/vms`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct VmCreateRequest {
    /// Image name or id prefix; the default image when absent.
    pub image: Option<String>,
    pub name: Option<String>,
    pub kernel: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub overlay_disk_size: Option<ByteSize>,
    pub work_disk_size: Option<ByteSize>,
    /// Host ports to forward to the guest while it runs (`-p`).
    pub ports: Vec<crate::PortSpec>,
    /// `auto` (default), `bridge` or `none` (`--network`).
    pub network: crate::VmNetwork,
    /// Where the VM may send traffic (`--egress`); absent: the config's
    /// `network.egress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::Egress>,
    /// Suspend the VM after this many seconds without use
    /// (`--idle-suspend`); 0 never. Absent: the daemon's default.
    pub idle_suspend_secs: Option<u64>,
}

/// `POST /v1/images/commit`: a new image from a running VM's root
/// filesystem, its work disk (`/root`) becoming the image's work seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImageCommitRequest {
    /// The VM: name or id, or an unambiguous prefix of one.
    pub vm: String,
    /// The new image's name.
    pub name: String,
}

/// `POST /v1/vms/{ref}/rebase`: move a stopped VM onto another image,
/// keeping its work disk and identity, with a fresh overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VmRebaseRequest {
    /// The image: name or id, or an unambiguous prefix of one.
    pub image: String,
}

/// `PATCH /v1/vms/{ref}`: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct VmSetRequest {
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// Grows the work disk; shrinking is refused.
    pub work_disk_size: Option<ByteSize>,
    /// Seconds without use before the VM is suspended; 0 never.
    pub idle_suspend_secs: Option<u64>,
}

/// `POST /v1/images/pull`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ImagePullRequest {
    /// `debian:bookworm`, `ghcr.io/org/app@sha256:...`, `127.0.0.1:5000/x:y`.
    pub reference: String,
    /// Image name in banger; default: the repository's last part and tag,
    /// e.g. `debian:bookworm`.
    pub name: Option<String>,
    /// `os/arch[/variant]`; default `linux/amd64`.
    pub platform: Option<String>,
    /// Allow plain HTTP to a registry that is not on loopback.
    pub insecure: bool,
    /// Registry credentials; without them `~/.docker/config.json` is read.
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Query of `POST /v1/vms/{ref}/exec` (an upgraded exec session).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields, default)]
pub struct ExecQuery {
    /// Apply the VM image's config as `docker run` does (what `banger vm
    /// run` asks for): argv becomes the image's `Entrypoint` followed by the
    /// exec's argv, or by the image's `Cmd` when argv is empty (`/bin/sh`
    /// when all are empty); the image's `Env` comes before the exec's env;
    /// its `WorkingDir` and `User` apply when the exec gives none. Default
    /// false: the exec runs exactly as sent.
    pub image_config: bool,
}

/// `POST /v1/vms/{ref}/start`: the body may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct VmStartRequest {
    /// Boot, even when a boot template of the VM's shape could restore it.
    pub cold: bool,
}

/// `POST /v1/templates` (`banger warm`): the body may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct WarmRequest {
    /// A kernel; an image or nothing means the default kernel.
    pub target: Option<String>,
    /// vCPUs (default: the `[vm]` default).
    pub vcpus: Option<u32>,
    /// Memory in MiB (default: the `[vm]` default).
    pub memory_mib: Option<u64>,
}

/// `POST /v1/vms/{ref}/stop` and `/restart`: the body may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct VmStopRequest {
    /// Seconds to wait for a clean shutdown before the VMM is killed
    /// (default 20, at most a day).
    #[cfg_attr(feature = "openapi", schema(maximum = 86400))]
    pub timeout_secs: Option<u64>,
}

/// Query of `DELETE /v1/vms/{ref}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields, default)]
pub struct VmRmQuery {
    /// Kill the VM first if it runs.
    pub force: bool,
}

/// Query of `POST /v1/vms/{ref}/tcp` (an upgraded TCP stream).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct TcpQuery {
    /// The guest port to connect to.
    pub port: u16,
    /// The guest address to connect to (default: the guest's loopback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Query of the files routes (`PUT`/`GET /v1/vms/{ref}/files`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// The absolute path in the guest: the directory a copy-in unpacks
    /// under, or what a copy-out archives.
    pub path: String,
}

/// The answer of a copy-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CopyInReport {
    /// The guest directory the tar was unpacked under.
    pub path: String,
    /// Bytes of tar received.
    pub bytes: u64,
}

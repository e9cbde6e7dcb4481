//! `GET /v1/config`: the daemon's effective configuration.
//!
//! A view of `config.toml` with every default filled in, as the daemon uses
//! it. The daemon's own `Config` type is the authority (it parses the file);
//! this is its wire shape, so the file format and the API can evolve apart.

use serde::{Deserialize, Serialize};

/// The answer of `GET /v1/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigReply {
    /// The config file the daemon read (it may not exist: all defaults).
    pub path: String,
    /// The effective configuration as TOML, ready to paste into the file.
    pub toml: String,
    pub config: EffectiveConfig,
}

/// Every setting, defaults included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EffectiveConfig {
    pub data_dir: String,
    /// `auto`, `firecracker` or `qemu`.
    pub vmm: String,
    pub default_image: Option<String>,
    pub vm: VmDefaultsConfig,
    pub network: NetworkSettings,
    pub binaries: BinariesConfig,
}

/// Defaults for new VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmDefaultsConfig {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Bytes.
    pub overlay_disk_size: u64,
    /// Bytes.
    pub work_disk_size: u64,
}

/// The host bridge and what guests are told about the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkSettings {
    /// `auto`, `bridge` or `none`.
    pub mode: String,
    pub bridge: String,
    /// Bridge address and prefix, e.g. `172.16.0.1/24`; the address is
    /// every guest's gateway and resolver.
    pub bridge_cidr: String,
    /// Resolvers the daemon's DNS server forwards other names to (`ip:port`);
    /// empty: the host's own.
    pub dns_upstreams: Vec<String>,
    pub domain: String,
    /// Where the daemon looks for the root helper; absent: the default.
    pub helper_socket: Option<String>,
}

/// External programs, as names looked up in `PATH` or paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BinariesConfig {
    pub firecracker: String,
    pub qemu: String,
}

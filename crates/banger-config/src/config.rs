//! The user's configuration: `~/.config/banger/config.toml`.
//!
//! Every setting has a default, documented on its field and in the README;
//! an absent file means all defaults. Unknown keys are an error so a typo is
//! never silently ignored. `BANGER_CONFIG` overrides the file's path and
//! `BANGER_HOME` the data directory (it wins over `data_dir` in the file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use banger_api::ByteSize;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Which VMM runs VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmmChoice {
    /// Firecracker when it can boot here (binary present, KVM usable), else QEMU.
    Auto,
    Firecracker,
    Qemu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where images, kernels, VM disks and the database live.
    /// Default: `$XDG_DATA_HOME/banger` or `~/.local/share/banger`.
    pub data_dir: PathBuf,
    /// `auto`, `firecracker` or `qemu`. Default `auto`.
    pub vmm: VmmChoice,
    /// Image used by `vm create`/`vm run` without IMAGE. Default: none, in
    /// which case the only image is used when exactly one exists.
    pub default_image: Option<String>,
    pub vm: VmDefaults,
    pub network: NetworkConfig,
    pub binaries: Binaries,
    /// Base URL of the Debian security archive that `kernel pull` fetches
    /// catalog entries given as pool paths from. Default: the `URIs:` of the
    /// host's apt source for a `*-security` suite (`/etc/apt/sources.list.d/
    /// *.sources`, or a `deb URI SUITE-security` line of `sources.list`);
    /// none when apt names none.
    pub kernel_mirror: Option<String>,
    /// More `kernel pull` entries (`[[kernel_catalog]]`); one named like a
    /// shipped entry replaces it.
    pub kernel_catalog: Vec<KernelCatalogConfig>,
    pub workspace: WorkspaceConfig,
    pub logs: LogsConfig,
    /// Host files copied into every VM at each start (`[[file_sync]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub file_sync: Vec<crate::file_sync::FileSync>,
}

/// One `[[kernel_catalog]]` entry: a kernel pinned by its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelCatalogConfig {
    pub name: String,
    /// `http(s)://...`, or a path on `kernel_mirror`.
    pub url: String,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// `deb`, `vmlinux` or `bzImage`.
    pub format: banger_api::KernelFileFormat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkspaceConfig {
    /// Guest directory a workspace lands in, as `<guest_dir>/<repo-name>`.
    /// Default: `/root` (the persistent work disk).
    pub guest_dir: String,
}

/// How big the logs banger writes may grow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// `bangerd.log` and each VM's `console.log` are rotated when they
    /// reach this many MiB, keeping one previous file (`.1`): each costs
    /// at most twice this on disk. Default 8.
    pub max_mib: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self { max_mib: 8 }
    }
}

impl LogsConfig {
    /// The bound in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_mib.saturating_mul(1 << 20)
    }
}

impl Default for WorkspaceConfig {
    fn default() -> Self {
        Self {
            guest_dir: "/root".into(),
        }
    }
}

/// Defaults for new VMs; each can be overridden per VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmDefaults {
    /// Default 2.
    pub vcpus: u32,
    /// Default 1024 MiB.
    pub memory_mib: u64,
    /// Size of the per-VM overlay (upper layer of the root filesystem). Sparse. Default 8G.
    pub overlay_disk_size: ByteSize,
    /// Size of the persistent `/root` disk. Sparse. Default 8G.
    pub work_disk_size: ByteSize,
    /// Make a boot template on the first cold start of each machine shape
    /// (kernel, agent, VMM, vCPUs, memory, NIC), so later starts of that
    /// shape restore it instead of booting. Default true.
    pub warm_templates: bool,
    /// Suspend running VMs after this long without use (no exec, shell,
    /// ssh, copy or forward session, no network traffic): `30m`, `1h`,
    /// or `off`. A VM's own `--idle-suspend` wins. Default `off`.
    pub idle_suspend: String,
    /// Under QEMU with TCG (no usable KVM), the most translated guest code
    /// each VM may keep, e.g. `32M`: the cache only grows, and a guest that
    /// booted systemd holds all of it long after, idle. A small cap saves
    /// that memory and costs time when the cache refills. Unset: 64 MiB
    /// (`banger_vmm::qemu::TCG_TB_MIB`). The VMM's cgroup allows for the
    /// cap; QEMU's own limit is 1 GiB.
    pub tcg_translation_cache: Option<ByteSize>,
}

impl VmDefaults {
    /// [`Self::idle_suspend`] in seconds, 0 meaning never (checked at load).
    pub fn idle_suspend_secs(&self) -> u64 {
        banger_api::validate::idle_suspend(&self.idle_suspend).unwrap_or(0)
    }
}

/// Whether VMs get a NIC on the host bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A NIC when the daemon can manage host networking (it runs as root,
    /// or the root helper answers); otherwise VMs boot without one and
    /// `vm show` and `doctor` say why.
    Auto,
    /// Always a NIC: a VM start fails when host networking is unavailable.
    Bridge,
    /// Never a NIC; the daemon touches no host network state.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// `auto`, `bridge` or `none`. Default `auto`.
    pub mode: NetworkMode,
    /// Host bridge name. Default `banger0`.
    pub bridge: String,
    /// Bridge address and prefix; guests get addresses from the same
    /// network, starting after the bridge's, and use the bridge address as
    /// gateway and resolver. Default `172.16.0.1/24`.
    pub bridge_cidr: Ipv4Net,
    /// Resolvers the daemon's DNS server forwards non-VM names to.
    /// Default: empty, meaning the host's own (from /etc/resolv.conf).
    pub dns_upstreams: Vec<SocketAddr>,
    /// Domain under which VMs resolve as `<name>.<domain>`. Default `vm`.
    pub domain: String,
    /// The root helper's socket. Default: `BANGER_HELPER_SOCKET`, else
    /// `/run/banger-helper/helper.sock` (where `banger system install` puts it).
    pub helper_socket: Option<PathBuf>,
    /// Where a VM created without `--egress` may send traffic: `all`
    /// (default: NAT to everywhere), `none`, or an allow list
    /// (`10.0.0.0/8,pypi.org:443`).
    pub egress: banger_api::Egress,
    /// The host address `-p HOST_PORT:GUEST_PORT` (without an address)
    /// publishes on. Default: none, meaning every address of the host,
    /// as Docker does; `127.0.0.1` keeps such ports off the network.
    pub publish_address: Option<std::net::Ipv4Addr>,
}

/// Paths of external programs; a bare name is looked up in `PATH`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Binaries {
    /// Default `firecracker`.
    pub firecracker: String,
    /// Default `qemu-system-x86_64`.
    pub qemu: String,
    /// Firecracker's jailer, from the same build. Default `jailer`; empty
    /// runs Firecracker unjailed (`banger doctor` and `vm show` say so).
    pub jailer: String,
    /// The compiled seccomp filter handed to a jailed Firecracker.
    /// Default: `seccomp-filter.bpf` beside the firecracker binary
    /// (`scripts/build-firecracker.sh` puts it there); none there means
    /// Firecracker's built-in filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firecracker_seccomp_filter: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            vmm: VmmChoice::Auto,
            default_image: None,
            vm: VmDefaults::default(),
            network: NetworkConfig::default(),
            binaries: Binaries::default(),
            kernel_mirror: crate::apt::apt_security_mirror(Path::new("/")),
            kernel_catalog: Vec::new(),
            workspace: WorkspaceConfig::default(),
            logs: LogsConfig::default(),
            file_sync: Vec::new(),
        }
    }
}

impl Default for VmDefaults {
    fn default() -> Self {
        Self {
            vcpus: 2,
            memory_mib: 1024,
            overlay_disk_size: ByteSize(8 * ByteSize::GIB),
            work_disk_size: ByteSize(8 * ByteSize::GIB),
            warm_templates: true,
            idle_suspend: "off".into(),
            tcg_translation_cache: None,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            mode: NetworkMode::Auto,
            bridge: "banger0".into(),
            bridge_cidr: "172.16.0.1/24".parse().expect("valid default cidr"),
            dns_upstreams: Vec::new(),
            domain: "vm".into(),
            helper_socket: None,
            egress: banger_api::Egress::All,
            publish_address: None,
        }
    }
}

impl Default for Binaries {
    fn default() -> Self {
        Self {
            firecracker: "firecracker".into(),
            qemu: "qemu-system-x86_64".into(),
            jailer: "jailer".into(),
            firecracker_seccomp_filter: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Where the config file is: `BANGER_CONFIG`, else
/// `$XDG_CONFIG_HOME/banger/config.toml`, else `~/.config/banger/config.toml`.
pub fn config_path() -> PathBuf {
    if let Some(p) = env_path("BANGER_CONFIG") {
        return p;
    }
    let base = env_path("XDG_CONFIG_HOME").unwrap_or_else(|| home_dir().join(".config"));
    base.join("banger").join("config.toml")
}

fn default_data_dir() -> PathBuf {
    let base = env_path("XDG_DATA_HOME").unwrap_or_else(|| home_dir().join(".local/share"));
    base.join("banger")
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

pub fn home_dir() -> PathBuf {
    env_path("HOME").unwrap_or_else(|| PathBuf::from("/"))
}

impl Config {
    /// Load the effective configuration: file (if present) + environment.
    pub fn load() -> Result<Config, ConfigError> {
        Self::load_from(&config_path())
    }

    pub fn load_from(path: &Path) -> Result<Config, ConfigError> {
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if let Some(home) = env_path("BANGER_HOME") {
            config.data_dir = home;
        }
        config.data_dir = expand_tilde(&config.data_dir);
        config.validate(path)?;
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            // toml's messages span several lines (a source excerpt); keep the gist.
            message: e.message().trim().to_string(),
        })
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        banger_api::validate::vcpus(self.vm.vcpus).map_err(invalid)?;
        banger_api::validate::memory_mib(self.vm.memory_mib).map_err(invalid)?;
        banger_api::validate::disk_size(self.vm.overlay_disk_size.0, "vm.overlay_disk_size")
            .map_err(invalid)?;
        banger_api::validate::disk_size(self.vm.work_disk_size.0, "vm.work_disk_size")
            .map_err(invalid)?;
        banger_api::validate::idle_suspend(&self.vm.idle_suspend)
            .map_err(|e| invalid(format!("vm.idle_suspend: {e}")))?;
        if let Some(c) = self.vm.tcg_translation_cache
            && !(ByteSize::MIB..=ByteSize::GIB).contains(&c.0)
        {
            return Err(invalid(format!(
                "vm.tcg_translation_cache {c} is out of range 1M..=1G"
            )));
        }
        let net = self.network.bridge_cidr;
        if net.prefix_len() > 29 {
            return Err(invalid(format!(
                "network.bridge_cidr {net} leaves no room for guests; use a /29 or larger"
            )));
        }
        if net.addr() == net.network() || net.addr() == net.broadcast() {
            return Err(invalid(format!(
                "network.bridge_cidr {net} must name the bridge's own address, e.g. 172.16.0.1/24"
            )));
        }
        if self.network.bridge.is_empty() || self.network.bridge.len() > 15 {
            return Err(invalid(format!(
                "network.bridge {:?} must be 1-15 characters (a Linux interface name)",
                self.network.bridge
            )));
        }
        for e in &self.kernel_catalog {
            banger_api::validate::artifact_name(&e.name, "kernel_catalog name").map_err(invalid)?;
            if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "kernel_catalog {}: sha256 must be 64 hex digits",
                    e.name
                )));
            }
            if e.url.is_empty() {
                return Err(invalid(format!("kernel_catalog {}: url is empty", e.name)));
            }
        }
        if !self.data_dir.is_absolute() {
            return Err(invalid(format!(
                "data_dir {} must be an absolute path",
                self.data_dir.display()
            )));
        }
        if !self.workspace.guest_dir.starts_with('/') {
            return Err(invalid(format!(
                "workspace.guest_dir {:?} must be an absolute guest path",
                self.workspace.guest_dir
            )));
        }
        if !(1..=4096).contains(&self.logs.max_mib) {
            return Err(invalid(format!(
                "logs.max_mib {} must be between 1 and 4096",
                self.logs.max_mib
            )));
        }
        let home = home_dir();
        for entry in &self.file_sync {
            entry.validate(&home).map_err(invalid)?;
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `banger config show`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn expand_tilde(p: &Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => home_dir().join(rest),
        Err(_) => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("", Path::new("x")).unwrap();
        assert_eq!(c.vm.vcpus, 2);
        assert_eq!(c.vm.work_disk_size, ByteSize(8 << 30));
        assert_eq!(c.network.bridge_cidr.to_string(), "172.16.0.1/24");
        assert_eq!(c.vmm, VmmChoice::Auto);
    }

    #[test]
    fn sizes_accept_human_units() {
        let c = Config::parse(
            "[vm]\nwork_disk_size = \"16G\"\nvcpus = 4\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.vm.work_disk_size, ByteSize(16 << 30));
        assert_eq!(c.vm.vcpus, 4);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::parse("[vm]\nvpcus = 4\n", Path::new("/c.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("vpcus"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn validation_rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (text, needle) in [
            ("[vm]\nvcpus = 0\n", "vcpus"),
            ("[vm]\nwork_disk_size = \"1M\"\n", "too small"),
            ("[network]\nbridge_cidr = \"10.0.0.0/24\"\n", "own address"),
            ("[network]\nbridge_cidr = \"10.0.0.1/30\"\n", "no room"),
            ("data_dir = \"relative\"\n", "absolute"),
            ("vmm = \"xen\"\n", "xen"),
            (
                "[[kernel_catalog]]\nname = \"k\"\nurl = \"http://h/k\"\nsha256 = \"abc\"\nformat = \"deb\"\n",
                "64 hex digits",
            ),
            (
                "[[kernel_catalog]]\nname = \"k\"\nurl = \"u\"\nsha256 = \"abc\"\nformat = \"rpm\"\n",
                "rpm",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Config::load_from(&path).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn rendered_config_parses_back() {
        let c = Config::default();
        let back = Config::parse(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(c, back);
    }
}

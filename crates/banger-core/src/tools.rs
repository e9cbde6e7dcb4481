//! The companion executables the services run, found beside the daemon.

use std::path::PathBuf;

/// Companion executables the services run.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `banger-rootfs`: unpacks root filesystems under fakeroot.
    pub rootfs_worker: PathBuf,
    /// The static `banger-agent`, /init of every VM's initramfs.
    pub agent: PathBuf,
}

impl Tools {
    /// Companions live beside the running executable (`cargo build` and
    /// `make install` both put them there); `PATH` is the fallback.
    pub fn beside_current_exe() -> Self {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()));
        let find = |name: &str| {
            dir.as_ref()
                .map(|d| d.join(name))
                .filter(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from(name))
        };
        Self {
            rootfs_worker: find("banger-rootfs"),
            agent: std::env::var_os("BANGER_AGENT_BIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| find("banger-agent")),
        }
    }
}

//! `banger doctor`: what this host can and cannot do, one line per check,
//! each failure with its fix.
//!
//! The checks read the host (device nodes, sysfs, `PATH`) through a
//! [`Host`] root so tests can point them at a fake tree. Doctor runs in the
//! CLI process, not the daemon: it is the command people run when the daemon
//! will not start. What needs a socket or a tool to learn (the helper, the
//! nft table, systemd-resolved) the CLI gathers into [`NetworkFacts`], so
//! the judgement here stays a pure function of what was found.

use std::path::{Path, PathBuf};
use std::process::Command;

use banger_api::{CheckStatus, DoctorCheck};

use crate::config::{Config, VmmChoice};

mod network;
pub use network::{HelperFact, NetworkFacts, ResolvedFact, TablesFact, network_checks};

/// Where device nodes and sysfs are read from (`/` on a real host).
#[derive(Debug, Clone)]
pub struct Host {
    pub root: PathBuf,
    pub path_var: Option<std::ffi::OsString>,
}

impl Host {
    pub fn real() -> Self {
        Self {
            root: PathBuf::from("/"),
            path_var: std::env::var_os("PATH"),
        }
    }

    fn file(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.file(abs).exists()
    }

    /// `which`: an absolute or relative path is taken as is; a bare name is
    /// searched in `PATH` and the sbin directories (root tools live there
    /// and an ordinary user's PATH often lacks them).
    pub fn find_program(&self, name: &str) -> Option<PathBuf> {
        if name.contains('/') {
            let p = PathBuf::from(name);
            return is_executable(&p).then_some(p);
        }
        let mut dirs: Vec<PathBuf> = self
            .path_var
            .as_ref()
            .map(|p| std::env::split_paths(p).collect())
            .unwrap_or_default();
        dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
        dirs.into_iter()
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// How KVM looks on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    Absent,
    /// `kvm_pvm` is loaded: only PVM-enabled guest kernels boot; standard
    /// kernels hang in the decompressor.
    PvmOnly,
    Usable,
}

pub fn kvm_kind(host: &Host) -> KvmKind {
    if !host.exists("/dev/kvm") {
        KvmKind::Absent
    } else if host.exists("/sys/module/kvm_pvm") {
        KvmKind::PvmOnly
    } else {
        KvmKind::Usable
    }
}

/// Which VMM `auto` resolves to, and why.
pub fn resolve_vmm(config: &Config, host: &Host) -> (VmmChoice, String) {
    let fc = host.find_program(&config.binaries.firecracker);
    match config.vmm {
        VmmChoice::Firecracker => (VmmChoice::Firecracker, "configured".into()),
        VmmChoice::Qemu => (VmmChoice::Qemu, "configured".into()),
        VmmChoice::Auto => match (fc, kvm_kind(host)) {
            (Some(_), KvmKind::Usable) => (
                VmmChoice::Firecracker,
                "firecracker found and KVM usable".into(),
            ),
            (None, _) => (VmmChoice::Qemu, "no firecracker binary".into()),
            (Some(_), KvmKind::PvmOnly) => (
                VmmChoice::Qemu,
                "KVM is PVM-only; firecracker cannot boot standard kernels".into(),
            ),
            (Some(_), KvmKind::Absent) => (VmmChoice::Qemu, "no /dev/kvm".into()),
        },
    }
}

pub(crate) fn check(
    name: &str,
    status: CheckStatus,
    detail: impl Into<String>,
    fix: &str,
) -> DoctorCheck {
    DoctorCheck {
        name: name.into(),
        status,
        detail: detail.into(),
        fix: if status == CheckStatus::Pass {
            String::new()
        } else {
            fix.into()
        },
    }
}

/// First line of `PROG --version` (or `-V`), for the detail column.
fn version_line(prog: &Path, flag: &str) -> String {
    Command::new(prog)
        .arg(flag)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn program_check(
    host: &Host,
    name: &str,
    prog: &str,
    flag: &str,
    missing: CheckStatus,
    fix: &str,
) -> DoctorCheck {
    match host.find_program(prog) {
        Some(p) => {
            let v = version_line(&p, flag);
            let detail = if v.is_empty() {
                p.display().to_string()
            } else {
                format!("{} ({v})", p.display())
            };
            check(name, CheckStatus::Pass, detail, fix)
        }
        None => check(name, missing, format!("{prog} not found"), fix),
    }
}

pub fn run(config: &Config, host: &Host) -> Vec<DoctorCheck> {
    let mut out = Vec::new();

    out.push(match kvm_kind(host) {
        KvmKind::Usable => check("kvm", CheckStatus::Pass, "/dev/kvm present", ""),
        KvmKind::PvmOnly => check(
            "kvm",
            CheckStatus::Warn,
            "/dev/kvm is PVM-only (kvm_pvm loaded): standard guest kernels hang on it",
            "VMs boot with QEMU and TCG emulation (slower); use a host with kvm_intel/kvm_amd for fast boots",
        ),
        KvmKind::Absent => check(
            "kvm",
            CheckStatus::Warn,
            "/dev/kvm missing",
            "load kvm_intel or kvm_amd and make /dev/kvm accessible; until then VMs boot with QEMU TCG",
        ),
    });

    out.push(program_check(
        host,
        "firecracker",
        &config.binaries.firecracker,
        "--version",
        CheckStatus::Warn,
        "install firecracker (and a usable KVM) for the fastest boots; QEMU is used meanwhile",
    ));
    let qemu_missing = if config.vmm == VmmChoice::Qemu {
        CheckStatus::Fail
    } else {
        CheckStatus::Warn
    };
    out.push(program_check(
        host,
        "qemu",
        &config.binaries.qemu,
        "--version",
        qemu_missing,
        "apt-get install qemu-system-x86",
    ));

    let (vmm, why) = resolve_vmm(config, host);
    let vmm_ok = match vmm {
        VmmChoice::Firecracker => host.find_program(&config.binaries.firecracker).is_some(),
        _ => host.find_program(&config.binaries.qemu).is_some(),
    };
    let vmm_name = match vmm {
        VmmChoice::Firecracker => "firecracker",
        _ => "qemu",
    };
    let accel = if vmm == VmmChoice::Qemu && kvm_kind(host) != KvmKind::Usable {
        " with TCG"
    } else {
        ""
    };
    // Firecracker has no software fallback: configured where KVM cannot
    // boot a standard kernel, every start ends in the driver's bounded wait.
    let kvm = kvm_kind(host);
    let fc_cannot_boot = vmm == VmmChoice::Firecracker && kvm != KvmKind::Usable;
    let (status, detail, fix) = if !vmm_ok {
        (
            CheckStatus::Fail,
            format!("{vmm_name}{accel} ({why})"),
            "install the VMM named here, or set vmm in config.toml",
        )
    } else if fc_cannot_boot {
        let kvm_says = if kvm == KvmKind::PvmOnly {
            "KVM is PVM-only, and standard guest kernels hang under it"
        } else {
            "there is no /dev/kvm"
        };
        (
            CheckStatus::Fail,
            format!("firecracker ({why}), but {kvm_says}: VMs will not boot"),
            "set vmm = \"auto\" (QEMU here) or vmm = \"qemu\" in config.toml",
        )
    } else {
        (CheckStatus::Pass, format!("{vmm_name}{accel} ({why})"), "")
    };
    out.push(check("vmm", status, detail, fix));

    for tool in ["mkfs.ext4", "debugfs", "e2fsck", "resize2fs"] {
        out.push(program_check(
            host,
            tool,
            tool,
            "-V",
            CheckStatus::Fail,
            "apt-get install e2fsprogs",
        ));
    }
    out.push(program_check(
        host,
        "fakeroot",
        "fakeroot",
        "--version",
        CheckStatus::Fail,
        "apt-get install fakeroot (image import keeps file ownership without root through it)",
    ));

    out.push(if host.exists("/dev/net/tun") {
        check("tun", CheckStatus::Pass, "/dev/net/tun present", "")
    } else {
        check(
            "tun",
            CheckStatus::Fail,
            "/dev/net/tun missing",
            "modprobe tun",
        )
    });

    out.push(program_check(
        host,
        "nftables",
        "nft",
        "--version",
        CheckStatus::Fail,
        "apt-get install nftables",
    ));

    out.push(if host.exists("/dev/vhost-vsock") {
        check("vsock", CheckStatus::Pass, "/dev/vhost-vsock present", "")
    } else {
        check(
            "vsock",
            CheckStatus::Warn,
            "/dev/vhost-vsock missing",
            "modprobe vhost_vsock for vsock with QEMU; without it QEMU VMs use a virtio-serial agent channel (Firecracker uses its own vsock)",
        )
    });

    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(files: &[&str], bins: &[&str]) -> (tempfile::TempDir, Host) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "").unwrap();
        }
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for b in bins {
            let p = bin.join(b);
            std::fs::write(&p, "#!/bin/sh\necho fake 1.0\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let host = Host {
            root: dir.path().to_path_buf(),
            path_var: Some(bin.into_os_string()),
        };
        (dir, host)
    }

    #[test]
    fn pvm_host_picks_qemu_even_with_firecracker() {
        let (_d, host) = fake_host(
            &["/dev/kvm", "/sys/module/kvm_pvm"],
            &["fc-test", "qemu-test"],
        );
        let mut cfg = Config::default();
        cfg.binaries.firecracker = "fc-test".into();
        cfg.binaries.qemu = "qemu-test".into();
        assert_eq!(kvm_kind(&host), KvmKind::PvmOnly);
        let (vmm, why) = resolve_vmm(&cfg, &host);
        assert_eq!(vmm, VmmChoice::Qemu);
        assert!(why.contains("PVM"));
    }

    #[test]
    fn firecracker_configured_on_pvm_fails_with_the_reason() {
        let (_d, host) = fake_host(
            &["/dev/kvm", "/sys/module/kvm_pvm"],
            &["fc-test", "qemu-test"],
        );
        let mut cfg = Config {
            vmm: VmmChoice::Firecracker,
            ..Config::default()
        };
        cfg.binaries.firecracker = "fc-test".into();
        cfg.binaries.qemu = "qemu-test".into();
        let checks = run(&cfg, &host);
        let vmm = checks.iter().find(|c| c.name == "vmm").unwrap();
        assert_eq!(vmm.status, CheckStatus::Fail, "{vmm:?}");
        assert!(vmm.detail.contains("PVM-only"), "{vmm:?}");
        assert!(vmm.fix.contains("vmm = \"qemu\""), "{vmm:?}");
        cfg.vmm = VmmChoice::Auto;
        let checks = run(&cfg, &host);
        let vmm = checks.iter().find(|c| c.name == "vmm").unwrap();
        assert_eq!(vmm.status, CheckStatus::Pass, "{vmm:?}");
    }

    #[test]
    fn usable_kvm_with_firecracker_picks_firecracker() {
        let (_d, host) = fake_host(&["/dev/kvm"], &["fc-test"]);
        let mut cfg = Config::default();
        cfg.binaries.firecracker = "fc-test".into();
        assert_eq!(resolve_vmm(&cfg, &host).0, VmmChoice::Firecracker);
    }

    #[test]
    fn missing_tools_fail_with_fix() {
        let (_d, host) = fake_host(&[], &[]);
        let mut cfg = Config::default();
        cfg.binaries.qemu = "no-such-qemu".into();
        cfg.binaries.firecracker = "no-such-fc".into();
        cfg.network.bridge = "nosuchbr0".into();
        let checks = run(&cfg, &host);
        let tun = checks.iter().find(|c| c.name == "tun").unwrap();
        assert_eq!(tun.status, CheckStatus::Fail);
        assert_eq!(tun.fix, "modprobe tun");
        let vmm = checks.iter().find(|c| c.name == "vmm").unwrap();
        assert_eq!(vmm.status, CheckStatus::Fail);
        let kvm = checks.iter().find(|c| c.name == "kvm").unwrap();
        assert_eq!(kvm.status, CheckStatus::Warn);
        for c in &checks {
            if c.status != CheckStatus::Pass {
                assert!(!c.fix.is_empty(), "{} has no fix", c.name);
            }
        }
    }
}

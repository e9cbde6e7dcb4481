//! Which VMM can boot a kernel, and why not: judged once at import from
//! the kernel's image formats, its config and the modules it came with.
//!
//! A driver the guest needs is reachable when it is built in (`=y`), or a
//! module (`=m`) whose file came with the kernel: the banger initramfs
//! loads those before the root is mounted.

use crate::kconfig::{KernelConfig, Tristate};
use crate::modules::ModuleIndex;
use crate::vmlinux::ElfInfo;

/// The VMMs banger drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    Firecracker,
    Qemu,
}

impl Vmm {
    pub const ALL: [Vmm; 2] = [Vmm::Firecracker, Vmm::Qemu];

    pub fn as_str(self) -> &'static str {
        match self {
            Vmm::Firecracker => "firecracker",
            Vmm::Qemu => "qemu",
        }
    }
}

/// The judgement for one VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Yes,
    /// Every requirement that fails, in a sentence each.
    No(Vec<String>),
    /// Not enough is known (no config) to say.
    Unknown(String),
}

/// One VMM and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmSupport {
    pub vmm: Vmm,
    pub verdict: Verdict,
}

/// What is known about an imported kernel.
#[derive(Debug, Clone, Copy)]
pub struct KernelFacts<'a> {
    pub config: Option<&'a KernelConfig>,
    pub modules: Option<&'a ModuleIndex>,
    /// A bzImage of the kernel exists.
    pub has_bzimage: bool,
    /// The ELF vmlinux, or why there is none.
    pub vmlinux: Result<&'a ElfInfo, &'a str>,
}

/// A driver the guest cannot do without: config symbol, module name, role.
struct Need {
    symbol: &'static str,
    module: &'static str,
    what: &'static str,
}

const COMMON: &[Need] = &[
    Need {
        symbol: "VIRTIO_MMIO",
        module: "virtio_mmio",
        what: "virtio-mmio transport",
    },
    Need {
        symbol: "VIRTIO_BLK",
        module: "virtio_blk",
        what: "disks",
    },
    Need {
        symbol: "EXT4_FS",
        module: "ext4",
        what: "the root filesystem",
    },
    Need {
        symbol: "OVERLAY_FS",
        module: "overlay",
        what: "the root overlay",
    },
];

/// The agent channel: vsock under Firecracker, virtio-serial under QEMU.
const FIRECRACKER: &[Need] = &[Need {
    symbol: "VIRTIO_VSOCKETS",
    module: "vmw_vsock_virtio_transport",
    what: "the agent channel (vsock)",
}];
const QEMU: &[Need] = &[Need {
    symbol: "VIRTIO_CONSOLE",
    module: "virtio_console",
    what: "the agent channel (virtio-serial)",
}];

/// The verdict for every VMM.
pub fn assess(facts: &KernelFacts<'_>) -> Vec<VmmSupport> {
    Vmm::ALL
        .into_iter()
        .map(|vmm| VmmSupport {
            vmm,
            verdict: assess_one(vmm, facts),
        })
        .collect()
}

fn assess_one(vmm: Vmm, facts: &KernelFacts<'_>) -> Verdict {
    let mut no = Vec::new();
    // The image format first: it is known without a config.
    match vmm {
        Vmm::Firecracker => match facts.vmlinux {
            Ok(elf) if elf.is_bootable_x86_64() => {}
            Ok(_) => {
                no.push("its vmlinux is not an x86_64 executable with a loaded entry point".into())
            }
            Err(why) => no.push(format!("it needs an ELF vmlinux ({why})")),
        },
        Vmm::Qemu => {
            let pvh = facts.config.is_some_and(|c| c.is_set("PVH"));
            if !facts.has_bzimage && facts.config.is_some() && !pvh {
                no.push("an ELF vmlinux boots only with CONFIG_PVH; import the bzImage".into());
            }
        }
    }
    let Some(config) = facts.config else {
        return if no.is_empty() {
            Verdict::Unknown(
                "no kernel config: neither a /boot/config-* in the package nor CONFIG_IKCONFIG"
                    .into(),
            )
        } else {
            Verdict::No(no)
        };
    };
    if !config.is_set("BLK_DEV_INITRD") {
        no.push("the banger initramfs needs BLK_DEV_INITRD=y".into());
    }
    // Both VMMs describe virtio-mmio devices in ACPI tables or on the
    // command line (`virtio_mmio.device=`); the kernel must read one.
    if !config.is_set("VIRTIO_MMIO_CMDLINE_DEVICES") && !config.is_set("ACPI") {
        no.push("virtio-mmio devices need VIRTIO_MMIO_CMDLINE_DEVICES or ACPI".into());
    }
    let extra = match vmm {
        Vmm::Firecracker => FIRECRACKER,
        Vmm::Qemu => QEMU,
    };
    for need in COMMON.iter().chain(extra) {
        if let Some(why) = unreachable(config, facts.modules, need) {
            no.push(why);
        }
    }
    if no.is_empty() {
        Verdict::Yes
    } else {
        Verdict::No(no)
    }
}

fn unreachable(
    config: &KernelConfig,
    modules: Option<&ModuleIndex>,
    need: &Need,
) -> Option<String> {
    match config.tristate(need.symbol) {
        Tristate::Yes => None,
        Tristate::Module => {
            let present = modules
                .is_some_and(|m| m.is_builtin(need.module) || m.path_of(need.module).is_some());
            (!present).then(|| {
                format!(
                    "{} ({}=m) is a module and {}.ko did not come with the kernel",
                    need.what, need.symbol, need.module
                )
            })
        }
        Tristate::No => Some(format!("{} needs {}", need.what, need.symbol)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmlinux::tests::fake_vmlinux;

    const GOOD: &str = "CONFIG_BLK_DEV_INITRD=y\nCONFIG_VIRTIO_MMIO=y\n\
        CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_EXT4_FS=y\n\
        CONFIG_OVERLAY_FS=y\nCONFIG_VIRTIO_VSOCKETS=y\nCONFIG_VIRTIO_CONSOLE=y\nCONFIG_PVH=y\n";

    fn elf() -> ElfInfo {
        crate::vmlinux::parse_elf(&fake_vmlinux("6.1.0")).unwrap()
    }

    fn verdicts(facts: &KernelFacts<'_>) -> (Verdict, Verdict) {
        let v = assess(facts);
        (v[0].verdict.clone(), v[1].verdict.clone())
    }

    #[test]
    fn built_in_everything_boots_everywhere() {
        let c = KernelConfig::parse(GOOD);
        let e = elf();
        let facts = KernelFacts {
            config: Some(&c),
            modules: None,
            has_bzimage: false,
            vmlinux: Ok(&e),
        };
        assert_eq!(verdicts(&facts), (Verdict::Yes, Verdict::Yes));
    }

    #[test]
    fn missing_discovery_and_modules_are_reasons() {
        let text = GOOD
            .replace("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y", "")
            .replace("CONFIG_VIRTIO_BLK=y", "CONFIG_VIRTIO_BLK=m");
        let c = KernelConfig::parse(&text);
        let facts = KernelFacts {
            config: Some(&c),
            modules: None,
            has_bzimage: true,
            vmlinux: Err("bzip2 kernels are not supported"),
        };
        let (fc, q) = verdicts(&facts);
        let Verdict::No(fc) = fc else {
            panic!("{fc:?}")
        };
        assert_eq!(
            fc,
            vec![
                "it needs an ELF vmlinux (bzip2 kernels are not supported)",
                "virtio-mmio devices need VIRTIO_MMIO_CMDLINE_DEVICES or ACPI",
                "disks (VIRTIO_BLK=m) is a module and virtio_blk.ko did not come with the kernel",
            ]
        );
        assert!(matches!(q, Verdict::No(r) if r.len() == 2));
    }

    #[test]
    fn no_config_is_unknown_unless_the_format_already_says_no() {
        let facts = KernelFacts {
            config: None,
            modules: None,
            has_bzimage: true,
            vmlinux: Err("none"),
        };
        let (fc, q) = verdicts(&facts);
        assert!(matches!(fc, Verdict::No(_)), "{fc:?}");
        assert!(matches!(q, Verdict::Unknown(_)), "{q:?}");
    }
}

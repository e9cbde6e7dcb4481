//! Fixtures for tests of the real Firecracker: the binary
//! `scripts/build-firecracker.sh` builds, an uncompressed ELF `vmlinux` of
//! Debian's cloud kernel (Firecracker on x86_64 loads nothing else), and
//! whether this host's KVM can boot it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{fixture, kernel_deb, require_tool, skip};

/// The real Firecracker binary (`BANGER_FIRECRACKER_BIN`).
pub fn firecracker_bin() -> Option<PathBuf> {
    fixture(
        "BANGER_FIRECRACKER_BIN",
        "run scripts/test.sh, or set it to the output of scripts/build-firecracker.sh",
    )
}

/// Reports the test skipped and returns false when KVM here cannot boot a
/// standard kernel (no /dev/kvm, or a PVM-only KVM); true when it can.
pub fn kvm_boots_standard_kernels() -> bool {
    if !Path::new("/dev/kvm").exists() {
        skip("no /dev/kvm: Firecracker cannot boot a guest on this host");
        return false;
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        skip(
            "KVM here is PVM-only (kvm_pvm is loaded): it boots no standard kernel, \
             so no Firecracker guest can boot on this host",
        );
        return false;
    }
    true
}

/// Debian's cloud kernel unpacked for Firecracker: the ELF vmlinux and the
/// package's module tree.
#[derive(Debug, Clone)]
pub struct DebianKernel {
    /// Uncompressed ELF kernel.
    pub vmlinux: PathBuf,
    /// The package's bzImage it came from.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the package.
    pub modules: PathBuf,
}

/// Debian's cloud kernel (the `BANGER_TEST_KERNEL_DEB` fixture) as an ELF
/// vmlinux in `dir`: the bzImage's payload, located by its setup header
/// (`payload_offset` at 0x248, `payload_length` at 0x24C, from the start
/// of the protected-mode code) and decompressed by the tool for its magic.
pub fn debian_vmlinux(dir: &Path) -> Option<PathBuf> {
    debian_kernel(dir).map(|k| k.vmlinux)
}

/// [`debian_vmlinux`], keeping the package's modules too.
pub fn debian_kernel(dir: &Path) -> Option<DebianKernel> {
    let deb = kernel_deb()?;
    let unpacked = dir.join("kernel-deb");
    std::fs::create_dir_all(&unpacked).expect("mkdir");
    let ok = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .expect("run dpkg-deb")
        .success();
    assert!(ok, "dpkg-deb -x {} failed", deb.display());
    let vmlinuz = std::fs::read_dir(unpacked.join("boot"))
        .expect("boot/ in the kernel package")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .expect("a vmlinuz in the kernel package");
    let image = std::fs::read(&vmlinuz).expect("read vmlinuz");
    let u32_at =
        |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().expect("4 bytes")) as usize;
    assert_eq!(
        &image[0x202..0x206],
        b"HdrS",
        "{} is not a bzImage",
        vmlinuz.display()
    );
    let setup_sects = match image[0x1F1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248);
    let payload = &image[start..start + u32_at(0x24C)];
    let (tool, package) = match payload {
        [0x02, 0x21, 0x4C, 0x18, ..] => ("lz4", "lz4"),
        [0xFD, b'7', b'z', b'X', b'Z', 0, ..] => ("xz", "xz-utils"),
        [0x28, 0xB5, 0x2F, 0xFD, ..] => ("zstd", "zstd"),
        [0x1F, 0x8B, ..] => ("gzip", "gzip"),
        other => panic!("unknown kernel compression, magic {:02x?}", &other[..4]),
    };
    let tool = require_tool(tool, package);
    let out = dir.join("vmlinux");
    let mut child = Command::new(&tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).expect("create vmlinux"))
        .stderr(Stdio::null())
        .spawn()
        .expect("run the decompressor");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        // The kernel appends its decompressed size after the stream, which
        // the tools call trailing garbage: judge the output, not the status.
        let _ = stdin.write_all(payload);
    }
    let _ = child.wait();
    let elf = std::fs::read(&out).expect("read vmlinux");
    assert!(
        elf.len() > 1 << 20 && elf.starts_with(b"\x7fELF"),
        "{} -dc of {} gave no ELF",
        tool.display(),
        vmlinuz.display()
    );
    let modules = std::fs::read_dir(unpacked.join("lib/modules"))
        .expect("lib/modules in the kernel package")
        .flatten()
        .next()
        .expect("lib/modules/<release>")
        .path();
    Some(DebianKernel {
        vmlinux: out,
        vmlinuz,
        modules,
    })
}

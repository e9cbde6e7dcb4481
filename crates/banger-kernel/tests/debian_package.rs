//! Imports a real Debian `linux-image-*` package.
//!
//! Set `BANGER_TEST_KERNEL_DEB` to the .deb, e.g.
//! `apt-cache depends linux-image-cloud-amd64` for the versioned name, then
//! `apt-get download linux-image-<version>-cloud-amd64`. Without it the test
//! fails, unless it is named in `BANGER_ALLOW_SKIP`.

use std::fs;
use std::path::PathBuf;

use banger_kernel::compat::{Verdict, Vmm};
use banger_kernel::{KernelFormat, ModuleIndex, import_deb, probe, read_elf};
use banger_testkit::kernel_deb;

/// What the banger initramfs and the VMs need from the kernel.
const WANTED: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "vsock",
    "vmw_vsock_virtio_transport",
    "overlay",
    "ext4",
];

#[test]
fn imports_real_debian_kernel() {
    let Some(deb) = kernel_deb() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("kernel");

    let k = import_deb(&deb, &dest).unwrap();
    let release = k.release.clone().expect("release from the bzImage header");
    println!("release: {release}");
    assert_eq!(k.format, KernelFormat::BzImage);
    assert_eq!(
        probe(&k.kernel_path).unwrap().release.as_deref(),
        Some(release.as_str())
    );
    let modules = k.modules_path.clone().expect("debian kernels ship modules");
    assert_eq!(
        modules.file_name().unwrap().to_str(),
        Some(release.as_str())
    );
    assert!(modules.join("modules.dep").is_file());
    assert!(dest.join("config").is_file());

    let index = ModuleIndex::open(&modules).unwrap();
    for name in WANTED {
        if index.is_builtin(name) {
            println!("{name}: built-in (=y)");
        } else if let Some(path) = index.path_of(name) {
            let mut deps = index.load_order(&[name]).unwrap();
            deps.pop();
            println!(
                "{name}: module (=m) {} deps: [{}]",
                path.strip_prefix(&modules).unwrap().display(),
                deps.join(" ")
            );
        } else {
            println!("{name}: absent");
        }
    }
    // What banger cannot boot without: block, overlay root, agent channel.
    for name in [
        "virtio_blk",
        "overlay",
        "vsock",
        "vmw_vsock_virtio_transport",
    ] {
        assert!(
            index.is_builtin(name) || index.path_of(name).is_some_and(|p| p.is_file()),
            "{name} missing from {release}"
        );
    }
    let plan = index.plan(WANTED).unwrap();
    println!("load order:");
    for p in &plan.load_order {
        println!("  {}", p.strip_prefix(&modules).unwrap().display());
        assert!(p.is_file(), "{}", p.display());
    }
    println!("built-in: {}", plan.builtin.join(" "));
}

/// The vmlinux derived from the package's bzImage is the same kernel as
/// an ELF Firecracker can load, and the verdicts follow its config.
#[test]
fn derives_vmlinux_and_judges_vmms() {
    let Some(deb) = kernel_deb() else { return };
    let dir = tempfile::tempdir().unwrap();
    let k = import_deb(&deb, &dir.path().join("kernel")).unwrap();
    let release = k.release.clone().unwrap();
    let vmlinux = k.vmlinux_path.clone().unwrap_or_else(|| {
        panic!("no vmlinux: {:?}", k.vmlinux_error);
    });
    assert_eq!(vmlinux, dir.path().join("kernel/vmlinux"));

    let elf = read_elf(&vmlinux).unwrap();
    println!(
        "vmlinux: {} bytes, entry {:#x}, {} PT_LOAD, {} sections",
        std::fs::metadata(&vmlinux).unwrap().len(),
        elf.entry,
        elf.segments.len(),
        elf.sections.len()
    );
    assert_eq!(elf.elf_type, 2, "ET_EXEC");
    assert_eq!(elf.machine, 62, "EM_X86_64");
    // x86_64 kernels link at 16 MiB physical (CONFIG_PHYSICAL_START) and
    // the first segment is .text, where the entry point is.
    assert_eq!(elf.entry, 0x100_0000);
    assert!(elf.entry_is_loaded());
    assert_eq!(elf.segments[0].paddr, 0x100_0000);
    assert_eq!(elf.segments[0].vaddr, 0xffff_ffff_8100_0000);
    for s in [".text", ".data", ".bss", ".init.text"] {
        assert!(
            elf.sections.iter().any(|n| n == s),
            "no {s} in {:?}",
            elf.sections
        );
    }
    // The kernel's own banner, inside the decompressed image.
    assert_eq!(
        probe(&vmlinux).unwrap().release.as_deref(),
        Some(release.as_str())
    );
    assert_eq!(probe(&vmlinux).unwrap().format, KernelFormat::Elf);

    assert_eq!(k.config_path, Some(dir.path().join("kernel/config")));
    for s in &k.support {
        println!("{}: {:?}", s.vmm.as_str(), s.verdict);
    }
    // Debian's cloud config: VIRTIO_MMIO=m without CMDLINE_DEVICES but
    // ACPI=y (both VMMs describe their devices in ACPI tables), and every
    // virtio driver a module shipped in the package.
    let verdict = |vmm: Vmm| {
        k.support
            .iter()
            .find(|s| s.vmm == vmm)
            .unwrap()
            .verdict
            .clone()
    };
    assert_eq!(verdict(Vmm::Firecracker), Verdict::Yes);
    assert_eq!(verdict(Vmm::Qemu), Verdict::Yes);
}

/// Our modules.dep against the host's `depmod`, when it is installed: same
/// dependency sets for every module.
#[test]
fn modules_dep_matches_depmod() {
    let Some(deb) = kernel_deb() else { return };
    let Ok(depmod) = which("depmod") else {
        banger_testkit::skip("depmod not found: apt-get install kmod");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let k = import_deb(&deb, &dir.path().join("kernel")).unwrap();
    let release = k.release.unwrap();
    let ours = fs::read_to_string(k.modules_path.as_ref().unwrap().join("modules.dep")).unwrap();

    // depmod -b BASE wants BASE/lib/modules/<release>.
    let base = dir.path().join("base");
    fs::create_dir_all(base.join("lib/modules")).unwrap();
    let copy = base.join("lib/modules").join(&release);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(k.modules_path.as_ref().unwrap())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    fs::remove_file(copy.join("modules.dep")).unwrap();
    let status = std::process::Command::new(depmod)
        .arg("-b")
        .arg(&base)
        .arg(&release)
        .status()
        .unwrap();
    assert!(status.success());
    let theirs = fs::read_to_string(copy.join("modules.dep")).unwrap();

    let parse =
        |text: &str| -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
            text.lines()
                .map(|l| {
                    let (m, d) = l.split_once(':').unwrap();
                    (
                        m.to_string(),
                        d.split_whitespace().map(str::to_string).collect(),
                    )
                })
                .collect()
        };
    let (ours, theirs) = (parse(&ours), parse(&theirs));
    assert_eq!(ours.len(), theirs.len());
    for (module, deps) in &theirs {
        assert_eq!(ours.get(module), Some(deps), "dependencies of {module}");
    }
}

fn which(tool: &str) -> Result<PathBuf, ()> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = PathBuf::from(dir).join(tool);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(())
}

//! The kernel `scripts/build-kernel.sh` builds, as a bzImage and as the
//! vmlinux the build produced: decompressing the former gives the latter's
//! ELF header, and both VMMs can boot it without modules.
//!
//! Set `BANGER_TEST_BUILT_KERNEL` to the directory the script prints.
//! Without it the test fails, unless it is named in `BANGER_ALLOW_SKIP`.

use banger_kernel::compat::{Verdict, Vmm};
use banger_kernel::{KernelFormat, extract_vmlinux, import_file, probe, read_elf};
use banger_testkit::built_kernel;

#[test]
fn bzimage_payload_is_the_built_vmlinux() {
    let Some(dir) = built_kernel() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let derived = tmp.path().join("vmlinux");
    let (codec, from_bz) = extract_vmlinux(&dir.join("bzImage"), &derived).unwrap();
    let built = read_elf(&dir.join("vmlinux")).unwrap();
    println!(
        "{} payload; entry {:#x}; {} PT_LOAD",
        codec.as_str(),
        from_bz.entry,
        from_bz.segments.len()
    );
    // The payload is the vmlinux with symbols stripped: same machine,
    // entry point and loadable segments (offsets move with the strip).
    assert_eq!(
        (from_bz.elf_type, from_bz.machine),
        (built.elf_type, built.machine)
    );
    assert_eq!(from_bz.entry, built.entry);
    let layout = |e: &banger_kernel::ElfInfo| -> Vec<(u64, u64, u64, u64)> {
        e.segments
            .iter()
            .map(|s| (s.vaddr, s.paddr, s.filesz, s.memsz))
            .collect()
    };
    assert_eq!(layout(&from_bz), layout(&built));
    assert!(from_bz.is_bootable_x86_64());
    assert_eq!(
        probe(&derived).unwrap().release,
        probe(&dir.join("bzImage")).unwrap().release
    );

    for (file, format) in [
        ("bzImage", KernelFormat::BzImage),
        ("vmlinux", KernelFormat::Elf),
    ] {
        let k = import_file(
            &dir.join(file),
            None,
            &tmp.path().join(file.to_lowercase() + ".k"),
        )
        .unwrap();
        assert_eq!(k.format, format);
        assert!(k.config_path.is_some(), "{file}: IKCONFIG read back");
        for s in &k.support {
            println!("{file}: {}: {:?}", s.vmm.as_str(), s.verdict);
        }
        for vmm in [Vmm::Firecracker, Vmm::Qemu] {
            let v = &k.support.iter().find(|s| s.vmm == vmm).unwrap().verdict;
            assert_eq!(v, &Verdict::Yes, "{file} under {}", vmm.as_str());
        }
    }
}

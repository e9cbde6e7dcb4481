//! banger's own guest kernel (`scripts/build-kernel.sh`) boots under QEMU
//! with everything built in: no modules, no modules disk, and the
//! Debian cloud kernel booted in the same run for a boot-time comparison.

use std::time::Instant;

use banger_testkit::{boot_home, fixture};

#[test]
fn built_kernel_boots_under_qemu_without_modules() {
    let Some(dir) = fixture(
        "BANGER_TEST_BUILT_KERNEL",
        "set it to the directory scripts/build-kernel.sh prints",
    ) else {
        return;
    };
    // Debian's kernel is the default; the built one is named per run.
    let Some(home) = boot_home() else { return };
    let bz = dir.join("bzImage");
    home.ok(&[
        "kernel",
        "import",
        bz.to_str().unwrap(),
        "--name",
        "banger-built",
    ]);
    let k = home.json(&["kernel", "show", "banger-built", "--json"]);
    assert!(k["modules_disk"].is_null(), "nothing to mount: {k}");
    let shown = home.ok(&["kernel", "show", "banger-built"]);
    assert!(shown.contains("firecracker: yes"), "{shown}");
    assert!(shown.contains("qemu: yes"), "{shown}");

    // Same run, same image, one after the other: the built kernel, then
    // Debian's (the default).
    let mut runs = Vec::new();
    for kernel in [Some("banger-built"), None] {
        let mut args = vec!["vm", "run", "busybox", "--rm"];
        if let Some(k) = kernel {
            args.extend(["--kernel", k]);
        }
        args.extend(["--", "uname", "-r"]);
        let t = Instant::now();
        let out = home.ok(&args);
        let name = kernel.unwrap_or("debian-cloud");
        println!(
            "{name}: vm run in {:?}, uname -r = {}",
            t.elapsed(),
            out.trim()
        );
        runs.push(out.trim().to_string());
    }
    assert_eq!(runs[0], k["release"].as_str().unwrap());
    assert!(runs[1].ends_with("-cloud-amd64"), "{}", runs[1]);
}

//! Boot steps run once by PID 1: early mounts, modules, the new root.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;
use banger_proto::boot_params::BootParams;

/// Where the initramfs builder writes the ordered module list.
pub const MODULE_LIST: &str = "/lib/modules/banger.list";

const NEWROOT: &str = "/newroot";
/// Inside the new root, where the base and overlay disks stay reachable so
/// shutdown can remount them read-only.
const STATE_DIR: &str = "/run/banger";

/// Mounts /proc, /sys and /dev in the initramfs. Errors for "already
/// mounted" are ignored: the kernel may have mounted devtmpfs itself
/// (CONFIG_DEVTMPFS_MOUNT).
pub fn early_mounts() {
    for (src, dst, fs) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        let _ = fs::create_dir_all(dst);
        if let Err(e) = sys::mount(src, dst, fs, libc::MS_NOSUID, "")
            && e.raw_os_error() != Some(libc::EBUSY)
        {
            crate::log(&format!("warning: {e}"));
        }
    }
}

/// Loads the modules listed in [`MODULE_LIST`], in order (the builder put
/// dependencies first). A missing list means a kernel with everything
/// built in.
pub fn load_modules(skip: &[String]) -> io::Result<usize> {
    load_modules_where(|name| !skip.iter().any(|s| s == name))
}

/// [`load_modules`] for the modules whose name `wanted` accepts.
pub fn load_modules_where(wanted: impl Fn(&str) -> bool) -> io::Result<usize> {
    let list = match fs::read_to_string(MODULE_LIST) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new("/lib/modules").join(line);
        let name = module_name(&path);
        // Loaded already (a warm start: the template loaded it): reading
        // the file again only for the kernel to say EEXIST costs time.
        if !wanted(&name) || Path::new("/sys/module").join(&name).exists() {
            continue;
        }
        match sys::finit_module(&path) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            // Keep going: one optional module (say vsock) failing must not
            // stop the disks from coming up.
            Err(e) => crate::log(&format!("warning: {e}")),
        }
    }
    Ok(n)
}

/// `kernel/net/vmw_vsock/vsock.ko` -> `vsock`; `-` and `_` are the same to
/// the kernel, so names are compared with `_`.
fn module_name(path: &Path) -> String {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    file.split('.').next().unwrap_or("").replace('-', "_")
}

/// Resolves `DEV` (path or `serial:NAME`) to a device node, waiting for the
/// driver to probe it.
pub fn resolve_device(spec: &str, timeout: Duration) -> io::Result<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = if let Some(serial) = spec.strip_prefix("serial:") {
            find_by_serial(serial)
        } else {
            let p = PathBuf::from(spec);
            p.exists().then_some(p)
        };
        if let Some(p) = found {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("device {spec} did not appear within {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn find_by_serial(serial: &str) -> Option<PathBuf> {
    for entry in fs::read_dir("/sys/block").ok()?.flatten() {
        let s = fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
        if s.trim() == serial {
            return Some(Path::new("/dev").join(entry.file_name()));
        }
    }
    None
}

/// Mount options of the VM's own disks (overlay upper and work): freed
/// blocks are discarded as ext4 commits their freeing, so the host's
/// sparse image file shrinks when the guest deletes files (the VMM punches
/// the holes). A VMM whose disks cannot discard makes ext4 warn once and
/// mount anyway.
const WRITABLE_OPTS: &str = "discard";

/// Builds the root: base (ro) + overlay upper on its own disk (or tmpfs),
/// the work disk at /root, and the API filesystems; then makes it `/`.
/// Returns false when no `banger.root` was given (stay in the initramfs).
pub fn switch_root(p: &BootParams) -> io::Result<bool> {
    let Some(root) = &p.root else {
        return Ok(false);
    };
    let wait = Duration::from_secs(10);
    let base_dev = resolve_device(root, wait)?;
    let base = "/mnt/base";
    let upper_mnt = "/mnt/overlay";
    fs::create_dir_all(base)?;
    fs::create_dir_all(upper_mnt)?;
    fs::create_dir_all(NEWROOT)?;
    sys::mount(
        &base_dev.to_string_lossy(),
        base,
        "ext4",
        libc::MS_RDONLY,
        "",
    )?;
    match &p.overlay {
        Some(dev) => {
            let dev = resolve_device(dev, wait)?;
            sys::mount(&dev.to_string_lossy(), upper_mnt, "ext4", 0, WRITABLE_OPTS)?;
        }
        // No overlay disk: a throwaway VM, changes live in RAM.
        None => sys::mount("tmpfs", upper_mnt, "tmpfs", 0, "mode=0755")?,
    }
    // The host stages upper/ and work/ at mkfs time; create them anyway so
    // an empty overlay disk also works.
    fs::create_dir_all(format!("{upper_mnt}/upper"))?;
    fs::create_dir_all(format!("{upper_mnt}/work"))?;
    sys::mount(
        "overlay",
        NEWROOT,
        "overlay",
        0,
        &format!("lowerdir={base},upperdir={upper_mnt}/upper,workdir={upper_mnt}/work"),
    )?;

    if let Some(dev) = &p.work {
        let dev = resolve_device(dev, wait)?;
        let target = format!("{NEWROOT}/root");
        fs::create_dir_all(&target)?;
        sys::mount(&dev.to_string_lossy(), &target, "ext4", 0, WRITABLE_OPTS)?;
    }

    // Move, not re-mount, /dev /proc /sys: device nodes created by devtmpfs
    // so far and the module state stay as they are, as switch_root(8) does.
    for d in ["dev", "proc", "sys"] {
        let target = format!("{NEWROOT}/{d}");
        fs::create_dir_all(&target)?;
        sys::mount(&format!("/{d}"), &target, "", libc::MS_MOVE, "")?;
    }
    for (src, dst, fstype, flags, data) in [
        (
            "devpts",
            "dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "gid=5,mode=620,ptmxmode=666",
        ),
        (
            "tmpfs",
            "dev/shm",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
        (
            "tmpfs",
            "run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
        (
            "tmpfs",
            "tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
    ] {
        let target = format!("{NEWROOT}/{dst}");
        fs::create_dir_all(&target)?;
        sys::mount(src, &target, fstype, flags, data)?;
    }
    for (src, name) in [(base, "base"), (upper_mnt, "overlay")] {
        let target = format!("{NEWROOT}{STATE_DIR}/{name}");
        fs::create_dir_all(&target)?;
        sys::mount(src, &target, "", libc::MS_MOVE, "")?;
    }

    // The classic switch_root dance: make the new root the mount at `/` and
    // chroot into it. pivot_root(2) does not work from an initramfs (rootfs
    // cannot be unmounted), hence MS_MOVE.
    std::env::set_current_dir(NEWROOT)?;
    sys::mount(".", "/", "", libc::MS_MOVE, "")?;
    sys::chroot(".")?;
    std::env::set_current_dir("/")?;
    Ok(true)
}

/// Mounts the kernel's module disk read-only at `/lib/modules/<release>` of
/// the new root, so `modprobe` finds every module the kernel has, not only
/// the few the initramfs carries. The image's own `/lib/modules` (for some
/// other kernel, or none) stays as it is beside it.
pub fn mount_modules(p: &BootParams) -> io::Result<()> {
    let Some(dev) = &p.modules else {
        return Ok(());
    };
    let dev = resolve_device(dev, Duration::from_secs(10))?;
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    // After the root switch: a `/lib` that is a symlink (merged /usr)
    // resolves inside the guest's root, not the initramfs.
    let target = Path::new("/lib/modules").join(release.trim());
    fs::create_dir_all(&target)?;
    sys::mount(
        &dev.to_string_lossy(),
        &target.to_string_lossy(),
        "ext4",
        libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID,
        "",
    )
}

/// Writes hostname and resolv.conf from the parameters.
pub fn identity(p: &BootParams) {
    if let Some(h) = &p.hostname
        && let Err(e) = sys::sethostname(h)
    {
        crate::log(&format!("warning: {e}"));
    }
    if !p.dns.is_empty() {
        let body: String = p.dns.iter().map(|a| format!("nameserver {a}\n")).collect();
        // resolv.conf is often a symlink into /run in images; replace it.
        let _ = fs::remove_file("/etc/resolv.conf");
        if let Err(e) = fs::write("/etc/resolv.conf", body) {
            crate::log(&format!("warning: write /etc/resolv.conf: {e}"));
        }
    }
}

/// Remounts the persistent filesystems read-only after a sync, so the host
/// finds them clean. Best effort: shutdown goes on whatever fails.
pub fn quiesce_disks() {
    sys::sync();
    for m in ["/root", "/"] {
        let _ = sys::mount("", m, "", libc::MS_REMOUNT | libc::MS_RDONLY, "");
    }
    for m in [format!("{STATE_DIR}/overlay"), format!("{STATE_DIR}/base")] {
        let _ = sys::mount("", &m, "", libc::MS_REMOUNT | libc::MS_RDONLY, "");
    }
    sys::sync();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_from_paths() {
        assert_eq!(
            module_name(Path::new("/lib/modules/kernel/net/vmw_vsock/vsock.ko")),
            "vsock"
        );
        assert_eq!(module_name(Path::new("a/virtio-net.ko")), "virtio_net");
        assert_eq!(module_name(Path::new("a/overlay.ko.xz")), "overlay");
    }
}

//! Thin, checked wrappers over the syscalls the agent needs.
//!
//! Each returns an [`io::Error`] with the operation and path in its message,
//! because the agent's only diagnostic channel is the console log and
//! "No such file or directory" alone does not say which mount failed.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul in path"))
}

fn ctx(op: &str, what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{op} {what}: {e}"))
}

/// mount(2). `fstype`/`source` may be empty for moves and remounts.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let null = std::ptr::null();
    // SAFETY: every pointer is either null (allowed by mount(2) for these
    // arguments) or a valid NUL-terminated string alive for the call.
    let r = unsafe {
        libc::mount(
            if source.is_empty() { null } else { s.as_ptr() },
            t.as_ptr(),
            if fstype.is_empty() { null } else { f.as_ptr() },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                d.as_ptr().cast()
            },
        )
    };
    if r != 0 {
        return Err(ctx(&format!("mount {source} ({fstype}) on"), target));
    }
    Ok(())
}

/// chroot(2).
pub fn chroot(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: `p` is a valid NUL-terminated string.
    if unsafe { libc::chroot(p.as_ptr()) } != 0 {
        return Err(ctx("chroot", path));
    }
    Ok(())
}

/// finit_module(2) with empty parameters.
pub fn finit_module(path: &Path) -> io::Result<()> {
    let f = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    // SAFETY: the fd is open for the duration of the call and the params
    // string is a valid empty C string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
    if r != 0 {
        return Err(ctx("finit_module", &path.display().to_string()));
    }
    Ok(())
}

/// sethostname(2).
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe a valid byte slice.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(ctx("sethostname", name));
    }
    Ok(())
}

/// sync(2).
pub fn sync() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() }
}

/// reboot(2) with one of the `RB_*` commands. Returns only on failure.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: reboot has no memory-safety preconditions; it ends the system.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// kill(2).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// getpid(2).
pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

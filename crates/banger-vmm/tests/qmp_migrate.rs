//! The snapshot primitive against a real QEMU under banger's seccomp
//! sandbox (`spawn=deny`: no `exec:` migration can work there): pause
//! through QMP, migrate the VM state into a file handed over as a
//! descriptor (`getfd` + `fd:NAME`), and bring a second QEMU up from that
//! file with `-incoming fd:N`. No guest kernel is needed: a bare microvm
//! sitting in its firmware still has RAM and devices to save. The guest
//! side (a process's memory surviving) is covered where VMs boot.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use banger_vmm::qemu::qmp::Qmp;

/// A sandboxed bare microvm with QMP on `sock`, our child, with
/// `keep_fd` inherited; returns its pid once QMP accepts.
fn qemu(sock: &Path, extra: &[&str], keep_fd: Option<i32>) -> i32 {
    let mut cmd = Command::new(banger_testkit::require_tool(
        "qemu-system-x86_64",
        "qemu-system-x86",
    ));
    cmd.args([
        "-M",
        "microvm",
        "-accel",
        "tcg",
        "-m",
        "64",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-sandbox",
        banger_vmm::qemu::SANDBOX,
    ])
    .arg("-qmp")
    .arg(format!("unix:{},server=on,wait=off", sock.display()))
    .args(extra)
    .stdin(Stdio::null());
    if let Some(fd) = keep_fd {
        // SAFETY: fcntl in the forked child on a descriptor the parent
        // keeps open until the spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().expect("run qemu");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("qemu exited: {status}");
        }
        assert!(std::time::Instant::now() < deadline, "no QMP socket");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id() as i32;
    std::thread::spawn(move || child.wait());
    pid
}

fn kill(pid: i32) {
    // SAFETY: plain kill(2) of a pid this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[tokio::test]
async fn pause_migrate_to_a_file_and_restore_from_it() {
    let dir = tempfile::tempdir().unwrap();
    // A space and a quote in the path: no shell is in the way any more.
    let state_dir = dir.path().join("it's here");
    std::fs::create_dir(&state_dir).unwrap();
    let state = state_dir.join("vm.state");

    let src_sock = dir.path().join("src.sock");
    let src = qemu(&src_sock, &[], None);
    let mut q = Qmp::connect(&src_sock, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(q.status().await.unwrap(), "running");
    q.pause().await.unwrap();
    assert_eq!(q.status().await.unwrap(), "paused");
    q.migrate_to_file(&state, Duration::from_secs(60))
        .await
        .unwrap();
    // QEMU leaves the source paused after an outgoing migration.
    assert_eq!(q.status().await.unwrap(), "postmigrate");
    let size = std::fs::metadata(&state).unwrap().len();
    assert!(size > 0, "empty state file");
    kill(src);

    let dst_sock = dir.path().join("dst.sock");
    let file = std::fs::File::open(&state).unwrap();
    let incoming = format!("fd:{}", file.as_raw_fd());
    let dst = qemu(
        &dst_sock,
        &["-S", "-incoming", &incoming],
        Some(file.as_raw_fd()),
    );
    drop(file);
    let mut q = Qmp::connect(&dst_sock, Duration::from_secs(10))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // `inmigrate` until the file is read, then `paused` (because of -S).
    loop {
        let s = q.status().await.unwrap();
        if s == "paused" {
            break;
        }
        assert_eq!(s, "inmigrate", "unexpected state");
        assert!(tokio::time::Instant::now() < deadline, "restore hung");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    q.resume().await.unwrap();
    assert_eq!(q.status().await.unwrap(), "running");
    kill(dst);

    // A failed migration is an error, not a hang: a directory that is gone.
    let src3_sock = dir.path().join("src3.sock");
    let src3 = qemu(&src3_sock, &[], None);
    let mut q = Qmp::connect(&src3_sock, Duration::from_secs(10))
        .await
        .unwrap();
    q.pause().await.unwrap();
    let err = q
        .migrate_to_file(&dir.path().join("gone/vm.state"), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("gone/vm.state"), "{err}");
    kill(src3);
}

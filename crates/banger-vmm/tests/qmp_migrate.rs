//! The snapshot primitive against a real QEMU: pause through QMP, migrate
//! the VM state into a file, and bring a second QEMU up from that file with
//! `-incoming "exec:cat FILE"`. No guest kernel is needed: a bare microvm
//! sitting in its firmware still has RAM and devices to save. The guest
//! side (a process's memory surviving) is covered where VMs boot.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use banger_vmm::qemu::qmp::Qmp;

/// A daemonized bare microvm with QMP on `sock`; returns its pid.
fn qemu(dir: &Path, sock: &Path, extra: &[&str]) -> i32 {
    let pidfile = dir.join(format!(
        "{}.pid",
        sock.file_stem().unwrap().to_str().unwrap()
    ));
    let out = Command::new(banger_testkit::require_tool(
        "qemu-system-x86_64",
        "qemu-system-x86",
    ))
    .args([
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
        "-daemonize",
        "-pidfile",
    ])
    .arg(&pidfile)
    .arg("-qmp")
    .arg(format!("unix:{},server=on,wait=off", sock.display()))
    .args(extra)
    .output()
    .expect("run qemu");
    assert!(
        out.status.success(),
        "qemu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
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
    // A space and a quote in the path: the exec: URI goes through sh -c.
    let state_dir = dir.path().join("it's here");
    std::fs::create_dir(&state_dir).unwrap();
    let state = state_dir.join("vm.state");

    let src_sock = dir.path().join("src.sock");
    let src = qemu(dir.path(), &src_sock, &[]);
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
    let incoming = format!(
        "exec:cat {}",
        banger_vmm::qemu::qmp::shell_quote(&state.display().to_string())
    );
    let dst = qemu(dir.path(), &dst_sock, &["-S", "-incoming", &incoming]);
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
    let src3 = qemu(dir.path(), &src3_sock, &[]);
    let mut q = Qmp::connect(&src3_sock, Duration::from_secs(10))
        .await
        .unwrap();
    q.pause().await.unwrap();
    let err = q
        .migrate_to_file(&dir.path().join("gone/vm.state"), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("migrate"), "{err}");
    kill(src3);
}

//! The snapshot primitive against a real QEMU under banger's seccomp
//! sandbox (`spawn=deny`: no `exec:` migration can work there): pause through QMP, migrate
//! the VM state into a file through a descriptor QEMU is handed, and bring
//! a second QEMU up from that file (`-incoming defer`, then the file as an
//! inherited descriptor). And the boot-template form: RAM on a shared file
//! stays out of the state (`x-ignore-shared`), and a second QEMU maps a
//! sealed copy of it. No guest kernel is needed: a bare microvm sitting in
//! its firmware still has RAM and devices to save. The guest side (a
//! process's memory surviving) is covered where VMs boot.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use banger_vmm::qemu::qmp::Qmp;

/// A sandboxed bare microvm with QMP on `sock`, our child; returns its
/// pid once QMP accepts.
fn qemu(sock: &Path, extra: &[&str]) -> i32 {
    qemu_with_fds(sock, extra, &[])
}

/// [`qemu`], inheriting the descriptors `fds` under their numbers.
fn qemu_with_fds(sock: &Path, extra: &[&str], fds: &[i32]) -> i32 {
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
    let fds = fds.to_vec();
    // SAFETY: only fcntl between fork and exec, on descriptors this test
    // holds open until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
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

/// Waits until an incoming load is over: `inmigrate` until the file is
/// read, then `paused` (because of -S).
async fn wait_loaded(q: &mut Qmp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = q.status().await.unwrap();
        if s == "paused" {
            break;
        }
        assert_eq!(s, "inmigrate", "unexpected state");
        assert!(tokio::time::Instant::now() < deadline, "restore hung");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pause_migrate_to_a_file_and_restore_from_it() {
    let dir = tempfile::tempdir().unwrap();
    // A space and a quote in the path: no shell anywhere.
    let state_dir = dir.path().join("it's here");
    std::fs::create_dir(&state_dir).unwrap();
    let state = state_dir.join("vm.state");

    let src_sock = dir.path().join("src.sock");
    let src = qemu(&src_sock, &[]);
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
    let dst = qemu_with_fds(
        &dst_sock,
        &["-S", "-incoming", "defer"],
        &[file.as_raw_fd()],
    );
    let mut q = Qmp::connect(&dst_sock, Duration::from_secs(10))
        .await
        .unwrap();
    q.migrate_incoming(file.as_raw_fd()).await.unwrap();
    drop(file);
    wait_loaded(&mut q).await;
    q.resume().await.unwrap();
    assert_eq!(q.status().await.unwrap(), "running");
    kill(dst);

    // A failed migration is an error, not a hang: a directory that is
    // gone (named), and a target that fails every write (QEMU says so).
    let src3_sock = dir.path().join("src3.sock");
    let src3 = qemu(&src3_sock, &[]);
    let mut q = Qmp::connect(&src3_sock, Duration::from_secs(10))
        .await
        .unwrap();
    q.pause().await.unwrap();
    let err = q
        .migrate_to_file(&dir.path().join("gone/vm.state"), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("gone/vm.state"), "{err}");
    let err = q
        .migrate_to_file(Path::new("/dev/full"), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("migrate to /dev/full"), "{err}");
    kill(src3);
}

/// A template's RAM: the source runs on a shared file, its saved state
/// leaves the RAM out, and a second QEMU maps a sealed copy of the file
/// privately and loads the devices. A load that expects the RAM in the
/// stream (no capability) fails instead of running a guest without it.
#[tokio::test]
async fn shared_ram_stays_out_of_the_state_and_is_mapped_back() {
    let dir = tempfile::tempdir().unwrap();
    let ram = dir.path().join("ram");
    std::fs::File::create(&ram)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let backend = format!(
        "memory-backend-file,id=microvm.ram,size=64M,mem-path={},share=on",
        ram.display()
    );
    let src_sock = dir.path().join("src.sock");
    let src = qemu(
        &src_sock,
        &[
            "-object",
            &backend,
            "-machine",
            "memory-backend=microvm.ram",
        ],
    );
    let mut q = Qmp::connect(&src_sock, Duration::from_secs(10))
        .await
        .unwrap();
    q.pause().await.unwrap();
    q.set_capability("x-ignore-shared", true).await.unwrap();
    let state = dir.path().join("state");
    q.migrate_to_file(&state, Duration::from_secs(60))
        .await
        .unwrap();
    kill(src);
    // Devices only: far less than the 64 MiB of RAM (the firmware alone
    // writes more than this into it).
    let size = std::fs::metadata(&state).unwrap().len();
    assert!(size < 1 << 20, "state of {size} bytes holds the RAM");

    let sealed = banger_vmm::ram::SealedRam::load(&ram).unwrap();
    let mapped = format!(
        "memory-backend-file,id=microvm.ram,size=64M,mem-path=/proc/self/fd/{},share=off",
        sealed.raw_fd()
    );
    for ignore_shared in [true, false] {
        let sock = dir.path().join(format!("dst-{ignore_shared}.sock"));
        let file = std::fs::File::open(&state).unwrap();
        let dst = qemu_with_fds(
            &sock,
            &[
                "-object",
                &mapped,
                "-machine",
                "memory-backend=microvm.ram",
                "-S",
                "-incoming",
                "defer",
            ],
            &[file.as_raw_fd(), sealed.raw_fd()],
        );
        let mut q = Qmp::connect(&sock, Duration::from_secs(10)).await.unwrap();
        q.set_capability("x-ignore-shared", ignore_shared)
            .await
            .unwrap();
        q.migrate_incoming(file.as_raw_fd()).await.unwrap();
        if ignore_shared {
            wait_loaded(&mut q).await;
            q.resume().await.unwrap();
            assert_eq!(q.status().await.unwrap(), "running");
            kill(dst);
        } else {
            // QEMU exits on a stream it cannot parse; QMP closes.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                match q.status().await {
                    Err(_) => break,
                    Ok(s) => assert_ne!(s, "paused", "a state without RAM loaded"),
                }
                assert!(tokio::time::Instant::now() < deadline, "load hung");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            kill(dst);
        }
    }
}

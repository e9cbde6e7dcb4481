//! banger on a laptop driving the daemon of another Linux host over ssh,
//! end to end: the real OpenSSH server in a network namespace, a user made
//! for the test whose daemon `banger system dial-stdio` starts, VMs under
//! QEMU there, and the client in a second namespace across a veth pair
//! (`remote/host.rs`). Every command of the issue runs this way with one
//! Debian VM (and a busybox `vm run --rm`), then the faults: a wrong
//! host, refused auth, a changed host key, no banger, an older banger, an
//! older API, and the connection cut during `cp` (both ways) and `exec`.
//! Each fault is one line and a non-zero exit, leaves nothing behind on
//! either side, and the next command works.

#[path = "remote/host.rs"]
mod host;
#[path = "remote/interactive.rs"]
mod interactive;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::{
    TestHome, agent_bin, busybox_rootfs, debian_rootfs_tar, kernel_deb, require_tool,
};
use host::{NO_BANGER_PORT, OLD_API_PORT, OLD_BANGER_PORT, RemoteHost};

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Laptop Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@laptop")
        .env("GIT_COMMITTER_NAME", "Laptop Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@laptop")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Wait for `ready`, up to `secs`.
fn wait_for(what: &str, secs: u64, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `banger ARGS` in the guest `ws` through the remote daemon: stdout.
fn in_guest(home: &TestHome, script: &str) -> String {
    home.ok(&["vm", "exec", "ws", "--", "sh", "-c", script])
}

/// `banger ARGS` against `host` instead: (code, stderr), asserting the
/// failure is one line.
fn fails_on(home: &TestHome, host: &str, args: &[&str]) -> String {
    let out = home
        .banger_std()
        .env("BANGER_HOST", host)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{host} {args:?} succeeded: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{host} {args:?}: one line: {err}");
    assert!(lines[0].starts_with("banger: "), "{err}");
    lines[0].to_string()
}

#[test]
fn a_remote_host_end_to_end() {
    let (Some(deb), Some(tar), Some(_)) = (kernel_deb(), debian_rootfs_tar(), agent_bin()) else {
        return;
    };
    require_tool("git", "git");
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    require_tool("script", "bsdutils");
    require_tool("setsid", "util-linux");
    let started = Instant::now();
    // Declared first, dropped last: the laptop's home stops the remote
    // daemon through ssh before the remote host goes.
    let remote = RemoteHost::new();
    let home = remote.laptop_home();

    imports(&remote, &home, &deb, &tar);
    contexts(&remote, &home);
    let repo = workspace_round_trip(&home);
    interactive::commands(&remote, &home);
    copies(&home);
    forwards(&remote, &home);
    ssh_through_the_remote(&remote, &home);
    faults(&remote, &home, &repo);

    // ssh was the only way in: nothing but sshd listens on the remote
    // host, nothing on the laptop once the forwards stopped.
    let mut ports = RemoteHost::listening(&remote.remote);
    ports.sort();
    assert_eq!(
        ports,
        [
            "10.231.0.2:22",
            "10.231.0.2:2222",
            "10.231.0.2:2223",
            "10.231.0.2:2224",
            "10.231.0.3:22"
        ],
        "remote listeners"
    );
    assert_eq!(
        RemoteHost::listening(&remote.laptop),
        Vec::<String>::new(),
        "laptop listeners"
    );
    home.ok(&["vm", "rm", "--force", "ws"]);
    eprintln!("remote suite: {:.1}s", started.elapsed().as_secs_f64());
}

/// A kernel package, a directory and a tarball from the laptop, streamed
/// to the remote daemon, which the remote user's login started.
fn imports(remote: &RemoteHost, home: &TestHome, deb: &Path, tar: &Path) {
    // `daemon status` never starts one; the first command does, there.
    let (code, out, _) = home.outcome(&["daemon", "status"]);
    assert_eq!(
        (code, out.as_str()),
        (3, "bangerd is not running on remote\n")
    );
    assert_eq!(
        home.ok(&["vm", "ls"]).lines().count(),
        1,
        "the header alone"
    );
    let info = home.json(&["daemon", "status", "--json"]);
    assert!(
        info["data_dir"]
            .as_str()
            .unwrap()
            .starts_with(remote.dir.join("home").to_str().unwrap()),
        "the remote user's daemon: {info}"
    );
    assert!(
        remote
            .user_processes()
            .iter()
            .any(|(pid, cmd)| *pid as i64 == info["pid"].as_i64().unwrap()
                && cmd.contains("bangerd")),
        "bangerd runs as the remote user"
    );
    home.ok(&["kernel", "import", "--deb", deb.to_str().unwrap()]);
    let bb = home.path().join("busybox-root");
    busybox_rootfs(&bb);
    home.ok(&["image", "import", bb.to_str().unwrap(), "--name", "busybox"]);
    home.ok(&["image", "import", tar.to_str().unwrap(), "--name", "debian"]);
    let images = home.json(&["image", "ls", "--json"]);
    let source = |name: &str| {
        images
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .map(|i| i["source"].clone())
            .unwrap()
    };
    assert_eq!(source("busybox")["kind"], "directory", "{images}");
    assert_eq!(source("busybox")["path"], bb.to_str().unwrap());
    assert_eq!(source("debian")["path"], tar.to_str().unwrap());
    // The uploads are gone from the remote scratch space.
    let tmp = remote.dir.join("home/.local/share/banger/tmp");
    wait_for("the upload scratch to go", 30, || {
        std::fs::read_dir(&tmp)
            .map(|d| {
                d.flatten()
                    .all(|e| !e.file_name().to_string_lossy().starts_with("upload-"))
            })
            .unwrap_or(true)
    });
    // A path that is not there: one line, nothing sent.
    let err = home.fails(&["image", "import", "/nonexistent/rootfs", "--name", "x"]);
    assert!(err.contains("/nonexistent/rootfs"), "{err}");
}

/// Named contexts: `--host` > `BANGER_HOST` > the current context > here.
fn contexts(remote: &RemoteHost, home: &TestHome) {
    home.ok(&[
        "context",
        "create",
        "box",
        "--host",
        "ssh://remote",
        "--description",
        "the closet",
    ]);
    let ls = home.json(&["context", "ls", "--json"]);
    assert_eq!(ls[0]["name"], "default");
    assert_eq!(ls[1]["host"], "ssh://remote", "{ls}");
    let err = home.fails(&["context", "create", "bad", "--host", "tcp://remote:2375"]);
    assert!(err.contains("only ssh://"), "{err}");
    let without_host = |args: &[&str]| {
        home.banger_std()
            .env_remove("BANGER_HOST")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // No host given: this laptop's own daemon (a local one, with none of
    // the remote's images).
    let local = without_host(&["image", "ls", "--json"]);
    assert!(local.status.success());
    assert_eq!(String::from_utf8_lossy(&local.stdout).trim(), "[]");
    home.ok(&["context", "use", "box"]);
    let remote_images = without_host(&["image", "ls", "--json"]);
    assert!(
        String::from_utf8_lossy(&remote_images.stdout).contains("debian"),
        "the current context's daemon"
    );
    let err = home.fails(&["context", "rm", "box"]);
    assert!(err.contains("current"), "{err}");
    home.ok(&["context", "use", "default"]);
    home.ok(&["context", "rm", "box"]);
    // The laptop's own daemon served that one listing; stop it.
    let out = without_host(&["daemon", "stop"]);
    assert!(out.status.success());
    let _ = remote;
}

/// The laptop's checkout into a VM on the remote host; the guest's commit
/// back as a branch of the laptop's repository.
fn workspace_round_trip(home: &TestHome) -> std::path::PathBuf {
    let repo = home.path().join("proj");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "laptop commit"]);
    std::fs::write(repo.join("notes.txt"), "untracked\n").unwrap();
    let (code, out, err) = home.outcome(&[
        "vm",
        "run",
        "--workspace",
        repo.to_str().unwrap(),
        "--name",
        "ws",
        "debian",
        "--",
        "sh",
        "-c",
        "git log -1 --format=%s; pwd; cat notes.txt",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "laptop commit\n/root/proj\nuntracked\n", "{err}");
    in_guest(
        home,
        "cd /root/proj && echo guest > guest.txt && git add -A && git commit -qm 'guest commit'",
    );
    let out = home.ok(&["workspace", "export", "ws", repo.to_str().unwrap()]);
    assert!(out.starts_with("banger/ws -> "), "{out}");
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%s", "banger/ws"]),
        "guest commit"
    );
    assert_eq!(git(&repo, &["show", "banger/ws:guest.txt"]), "guest");
    assert_eq!(git(&repo, &["symbolic-ref", "--short", "HEAD"]), "main");
    // The laptop takes it and goes on; a sync brings that back.
    std::fs::remove_file(repo.join("notes.txt")).unwrap();
    git(&repo, &["merge", "-q", "--ff-only", "banger/ws"]);
    std::fs::write(repo.join("README"), "hello again\n").unwrap();
    git(&repo, &["commit", "-qam", "laptop again"]);
    home.ok(&["workspace", "sync", "ws", repo.to_str().unwrap()]);
    assert_eq!(
        in_guest(home, "cd /root/proj && git log -1 --format=%H").trim(),
        git(&repo, &["rev-parse", "HEAD"])
    );
    repo
}

/// `vm cp` both ways, where the host side is the laptop's filesystem.
fn copies(home: &TestHome) {
    use std::os::unix::fs::PermissionsExt;
    let src = home.path().join("payload");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::set_permissions(src.join("a.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    home.ok(&["vm", "cp", src.to_str().unwrap(), "ws:/root/"]);
    assert_eq!(
        in_guest(
            home,
            "cat /root/payload/a.txt; stat -c %a /root/payload/a.txt; readlink /root/payload/link; wc -c < /root/payload/sub/b.bin"
        ),
        "alpha\n640\na.txt\n300000\n"
    );
    let back = home.path().join("back");
    std::fs::create_dir(&back).unwrap();
    home.ok(&["vm", "cp", "ws:/root/payload", back.to_str().unwrap()]);
    let got = back.join("payload");
    assert_eq!(
        std::fs::read_to_string(got.join("a.txt")).unwrap(),
        "alpha\n"
    );
    assert_eq!(
        std::fs::read(got.join("sub/b.bin")).unwrap(),
        vec![7u8; 300_000]
    );
    assert_eq!(
        std::fs::metadata(got.join("a.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert_eq!(
        std::fs::read_link(got.join("link")).unwrap(),
        Path::new("a.txt")
    );
}

/// Read the SSH banner through a forwarded port on the laptop.
fn banner_via(remote: &RemoteHost, port: u16) -> String {
    remote.laptop.in_thread(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut line = String::new();
        BufReader::new(&mut s).read_line(&mut line).unwrap();
        line
    })
}

fn interrupt(pid: u32) {
    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// `vm forward` binds on the laptop; `vm ports --forward` serves the
/// guest's ports there, with URLs that work from the laptop.
fn forwards(remote: &RemoteHost, home: &TestHome) {
    // sshd comes up under systemd some seconds after the agent answers.
    wait_for("sshd in the guest", 180, || {
        home.outcome(&["vm", "exec", "ws", "--", "systemctl", "is-active", "ssh"])
            .0
            == 0
    });
    let mut fwd = home
        .banger_std()
        .args(["vm", "forward", "ws", "0:22"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(fwd.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "forwarding 127.0.0.1:PORT -> ws:22"
    let port: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        RemoteHost::listening(&remote.laptop).contains(&format!("127.0.0.1:{port}")),
        "bound on the laptop"
    );
    assert!(banner_via(remote, port).starts_with("SSH-2.0-"));
    interrupt(fwd.id());
    let _ = fwd.wait();

    // Without --forward: the guest URLs are of the remote host, and it
    // says how to reach them.
    let (code, out, err) = home.outcome(&["vm", "ports", "ws"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sshd"), "{out}");
    assert!(err.contains("--forward"), "{err}");
    let mut ports = home
        .banger_std()
        .args(["vm", "ports", "ws", "--json", "--forward"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut json = String::new();
    let mut out = BufReader::new(ports.stdout.take().unwrap());
    // The JSON array, pretty-printed, ends with a line "]".
    loop {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap() > 0, "ports ended: {json}");
        json.push_str(&l);
        if l.trim_end() == "]" {
            break;
        }
    }
    let lines: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ssh = lines
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["port"] == 22 && l["proto"].as_str().unwrap().starts_with("tcp"))
        .unwrap_or_else(|| panic!("{json}"));
    let url = ssh["url"].as_str().unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(banner_via(remote, port).starts_with("SSH-2.0-"));
    interrupt(ports.id());
    let _ = ports.wait();
}

/// `vm ssh` and `vm ssh-config` with the remote host as the jump and the
/// VM's host key pinned on the laptop.
fn ssh_through_the_remote(remote: &RemoteHost, home: &TestHome) {
    let (code, out, err) = home.outcome(&[
        "vm",
        "ssh",
        "ws",
        "--",
        "sh",
        "-c",
        "echo hi from $(hostname); exit 7",
    ]);
    assert_eq!((code, out.as_str()), (7, "hi from ws\n"), "{err}");
    let cfg = home.path().join("vm_ssh_config");
    std::fs::write(&cfg, home.ok(&["vm", "ssh-config", "ws"])).unwrap();
    let plain_ssh = || {
        interactive::in_laptop(remote, home, "ssh")
            .arg("-F")
            .arg(&cfg)
            .args(["ws.vm", "id -un"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = plain_ssh();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "root\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The pinned key is checked: another key in the laptop's copy is
    // refused, not learned.
    let dir = std::fs::read_dir(home.data_dir().join("remotes"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let kh = dir.join("known_hosts");
    let good = std::fs::read_to_string(&kh).unwrap();
    let other = std::fs::read_to_string(remote.dir.join("other_host_key.pub")).unwrap();
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    let bad: String = good
        .lines()
        .map(|l| {
            format!(
                "{} {}\n",
                l.split_whitespace().next().unwrap(),
                other.join(" ")
            )
        })
        .collect();
    std::fs::write(&kh, &bad).unwrap();
    let out = plain_ssh();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        bad,
        "nothing learned"
    );
    // `vm ssh` puts the daemon's pinned key back.
    let (code, _, err) = home.outcome(&["vm", "ssh", "ws", "--", "true"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), good);
}

/// Each fault: one line, a non-zero exit, nothing made on either side,
/// and the next command works.
fn faults(remote: &RemoteHost, home: &TestHome, repo: &Path) {
    let vms = home.json(&["vm", "ls", "--json"]);
    let images = home.json(&["image", "ls", "--json"]);
    let unchanged = |what: &str| {
        assert_eq!(home.json(&["vm", "ls", "--json"]), vms, "after {what}");
        assert_eq!(
            home.json(&["image", "ls", "--json"]),
            images,
            "after {what}"
        );
    };
    let cases: [(String, &[&str], &str); 6] = [
        (
            "ssh://remote:2299".into(),
            &["vm", "ls"],
            "Connection refused",
        ),
        (
            "ssh://nobody@remote".into(),
            &["vm", "ls"],
            "Permission denied",
        ),
        ("ssh://changed".into(), &["vm", "ls"], "host key differs"),
        (
            format!("ssh://remote:{NO_BANGER_PORT}"),
            &["vm", "ls"],
            "no banger on",
        ),
        (
            format!("ssh://remote:{OLD_BANGER_PORT}"),
            &["vm", "ls"],
            "too old",
        ),
        (
            format!("ssh://remote:{OLD_API_PORT}"),
            &["vm", "ls"],
            "speaks API v0",
        ),
    ];
    for (host, args, says) in cases {
        let err = fails_on(home, &host, args);
        assert!(err.contains(says), "{host}: {err}");
        unchanged(&host);
    }
    // An upload to a host that refuses leaves nothing either.
    let err = fails_on(
        home,
        "ssh://nobody@remote",
        &["image", "import", repo.to_str().unwrap(), "--name", "never"],
    );
    assert!(err.contains("Permission denied"), "{err}");
    unchanged("a refused upload");

    cut_during_exec(remote, home);
    cut_during_copy_in(remote, home);
    cut_during_copy_out(remote, home);
    unchanged("the cuts");
}

/// The child's exit and its stderr's last line, asserting it is the only
/// error line.
fn one_line_failure(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("banger: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(err.trim_end().lines().last(), Some(errors[0]), "{err}");
    errors[0].to_string()
}

fn cut_during_exec(remote: &RemoteHost, home: &TestHome) {
    in_guest(home, "rm -f /tmp/exec.pid");
    let child = home
        .banger_std()
        .args([
            "vm",
            "exec",
            "ws",
            "--",
            "sh",
            "-c",
            "echo $$ > /tmp/exec.pid; exec sleep 1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the exec to start", 60, || {
        home.outcome(&["vm", "exec", "ws", "--", "test", "-s", "/tmp/exec.pid"])
            .0
            == 0
    });
    remote.cut();
    let err = one_line_failure(child);
    assert!(err.contains("ssh connection to remote was cut"), "{err}");
    // The guest process got its hang-up; the next command works.
    wait_for("the exec's process to end", 60, || {
        in_guest(
            home,
            "test -d /proc/$(cat /tmp/exec.pid) && echo alive || echo gone",
        )
        .trim()
            == "gone"
    });
}

fn staging_left(home: &TestHome, dir: &str) -> String {
    in_guest(home, &format!("ls -A {dir} | grep -c banger-copy || true"))
        .trim()
        .to_string()
}

/// A tar stream fed by hand, held open halfway through a large file, then
/// the connection cut: the guest keeps nothing of it.
fn cut_during_copy_in(remote: &RemoteHost, home: &TestHome) {
    let mut child = home
        .banger_std()
        .args(["vm", "cp", "-", "ws:/root/incut"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_path("big.bin").unwrap();
    h.set_size(64 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    stdin.write_all(h.as_bytes()).unwrap();
    stdin.write_all(&vec![1u8; 4 << 20]).unwrap();
    stdin.flush().unwrap();
    wait_for("the copy to reach the guest", 60, || {
        in_guest(
            home,
            "ls -A /root/incut 2>/dev/null | grep -c banger-copy || true",
        )
        .trim()
            == "1"
    });
    remote.cut();
    drop(stdin);
    let err = one_line_failure(child);
    assert!(err.contains("remote"), "{err}");
    wait_for("the guest to drop the half copy", 60, || {
        in_guest(home, "test -e /root/incut && echo there || echo gone").trim() == "gone"
    });
    assert_eq!(staging_left(home, "/root"), "0");
}

/// A large file out of the guest, the client stopped once its staging
/// directory exists, the connection cut: the laptop keeps nothing of it.
fn cut_during_copy_out(remote: &RemoteHost, home: &TestHome) {
    in_guest(
        home,
        "dd if=/dev/zero of=/root/big.out bs=1M count=48 status=none",
    );
    let dest = home.path().join("outcut");
    std::fs::create_dir(&dest).unwrap();
    let child = home
        .banger_std()
        .args(["vm", "cp", "ws:/root/big.out", dest.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let staged = || {
        std::fs::read_dir(&dest)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".banger-copy-"))
    };
    wait_for("the copy to start landing", 60, staged);
    // Stopped, it cannot finish before the cut whatever the speed.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    remote.cut();
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let err = one_line_failure(child);
    assert!(err.contains("remote"), "{err}");
    let left: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "the laptop kept {left:?}");
    // The next command works.
    in_guest(home, "rm /root/big.out");
}

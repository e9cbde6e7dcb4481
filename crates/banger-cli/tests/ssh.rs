//! Access end to end under QEMU with the real OpenSSH client: `vm ssh` into
//! the Debian image (systemd + sshd) through the agent proxy, strict host
//! key checking against banger's known_hosts (a changed key is refused, the
//! entries leave with `vm rm`), `scp` and `rsync -e ssh` with the printed
//! `vm ssh-config`; and `vm shell` into the busybox image (no sshd) driven
//! through a real PTY by util-linux `script`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use banger_testkit::{TestHome, boot_home, debian_rootfs_tar, require_tool};

/// `banger ARGS` -> (exit code, stdout, stderr), stdin from /dev/null.
fn run(home: &TestHome, args: &[&str]) -> (i32, String, String) {
    home.outcome(args)
}

/// `prog ARGS` with this home's environment (what a user's shell would have).
fn tool(home: &TestHome, prog: &str) -> Command {
    let b = home.banger_std();
    let mut cmd = Command::new(prog);
    cmd.env_clear();
    for (k, v) in b.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn known_hosts(home: &TestHome) -> String {
    std::fs::read_to_string(home.data_dir().join("ssh/known_hosts")).unwrap_or_default()
}

#[test]
fn ssh_into_debian_with_pinned_keys_scp_rsync_and_rm() {
    let Some(home) = boot_home() else { return };
    let Some(tar) = debian_rootfs_tar() else {
        return;
    };
    require_tool("ssh", "openssh-client");
    require_tool("debugfs", "e2fsprogs");
    home.ok(&["image", "import", tar.to_str().unwrap(), "--name", "debian"]);
    let vm = home.json(&["vm", "create", "debian", "--name", "deb", "--json"]);
    let id = vm["id"].as_str().unwrap().to_string();
    let alias = format!("banger-vm-{id}");

    // Keys are on the disks before the first boot, with sshd's modes.
    let work = Path::new(vm["work_disk"].as_str().unwrap());
    let overlay = Path::new(vm["overlay_disk"].as_str().unwrap());
    let dot_ssh = banger_disk::stat(work, "/.ssh").unwrap();
    assert_eq!((dot_ssh.uid, dot_ssh.gid, dot_ssh.perm), (0, 0, 0o700));
    let ak = banger_disk::stat(work, "/.ssh/authorized_keys").unwrap();
    assert_eq!((ak.uid, ak.gid, ak.perm), (0, 0, 0o600));
    let user_pub = std::fs::read_to_string(home.data_dir().join("ssh/id_ed25519.pub")).unwrap();
    assert_eq!(
        String::from_utf8(banger_disk::read_file(work, "/.ssh/authorized_keys").unwrap()).unwrap(),
        user_pub
    );
    let hk = banger_disk::stat(overlay, "/upper/etc/ssh/ssh_host_ed25519_key").unwrap();
    assert_eq!((hk.uid, hk.perm), (0, 0o600));
    let host_pub = String::from_utf8(
        banger_disk::read_file(overlay, "/upper/etc/ssh/ssh_host_ed25519_key.pub").unwrap(),
    )
    .unwrap();
    let host_key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    let kh = known_hosts(&home);
    let ip = vm["guest_ip"].as_str().unwrap();
    assert!(
        kh.contains(&format!("deb.vm,{ip},{alias} {}", host_key.join(" "))),
        "{kh}"
    );

    home.ok(&["vm", "start", "deb"]);
    // sshd comes up under systemd some seconds after the agent answers;
    // `vm ssh` waits for it. A command, no prompt (stdin is /dev/null and
    // BatchMode is on), its words the guest's argv as with `vm exec`, the
    // exit code passed through.
    let (code, out, err) = run(
        &home,
        &[
            "vm",
            "ssh",
            "deb",
            "--",
            "sh",
            "-c",
            "echo hi from $(hostname); exit 7",
        ],
    );
    assert_eq!(code, 7, "stdout {out} stderr {err}");
    assert_eq!(out, "hi from deb\n", "{err}");
    let (code, out, _) = run(
        &home,
        &["vm", "ssh", "deb", "--", "printf", "%s|", "a b", "c"],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "a b|c|"),
        "one word stays one word"
    );

    // ssh-config works for plain ssh, scp and rsync -e ssh.
    let cfg = home.path().join("ssh_config");
    std::fs::write(&cfg, home.ok(&["vm", "ssh-config", "deb"])).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let (code, out, err) = output(tool(&home, "ssh").args(["-F", cfg_s, "deb.vm", "id -un"]));
    assert_eq!((code, out.as_str()), (0, "root\n"), "{err}");
    let src = home.path().join("payload");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 300_000]).unwrap();
    let (code, _, err) = output(tool(&home, "scp").args([
        "-F",
        cfg_s,
        src.join("a.txt").to_str().unwrap(),
        "deb.vm:/tmp/a.txt",
    ]));
    assert_eq!(code, 0, "scp: {err}");
    assert_eq!(
        run(&home, &["vm", "exec", "deb", "--", "cat", "/tmp/a.txt"]).1,
        "alpha\n"
    );
    if which("rsync") {
        let (code, _, err) = output(tool(&home, "rsync").args([
            "-a",
            "-e",
            &format!("ssh -F {cfg_s}"),
            &format!("{}/", src.display()),
            "deb.vm:/tmp/tree/",
        ]));
        assert_eq!(code, 0, "rsync: {err}");
        let (_, sum, _) = run(
            &home,
            &[
                "vm",
                "exec",
                "deb",
                "--",
                "sha256sum",
                "/tmp/tree/sub/b.bin",
            ],
        );
        let (_, local, _) = output(Command::new("sha256sum").arg(src.join("sub/b.bin")));
        assert_eq!(
            sum.split_whitespace().next(),
            local.split_whitespace().next(),
            "rsync copied the file whole"
        );
    } else {
        banger_testkit::skip("rsync -e ssh: no rsync on this host (apt-get install rsync)");
    }

    // A changed host key is refused: swap the recorded key for another.
    let kh_path = home.data_dir().join("ssh/known_hosts");
    let original = known_hosts(&home);
    let other = home.path().join("other_key");
    let (code, _, err) = output(Command::new("ssh-keygen").args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        other.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{err}");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_key: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    std::fs::write(
        &kh_path,
        original.replace(&host_key.join(" "), &other_key.join(" ")),
    )
    .unwrap();
    let (code, out, err) = run(&home, &["vm", "ssh", "deb", "--", "echo should-not-run"]);
    assert_eq!(code, 255, "ssh refuses: {out} {err}");
    assert!(!out.contains("should-not-run"));
    assert!(
        err.contains("IDENTIFICATION HAS CHANGED") || err.contains("Host key verification failed"),
        "{err}"
    );
    std::fs::write(&kh_path, &original).unwrap();
    assert_eq!(run(&home, &["vm", "ssh", "deb", "--", "true"]).0, 0);

    // vm rm takes its entries away (and only its own).
    home.ok(&["vm", "rm", "--force", "deb"]);
    let kh = known_hosts(&home);
    assert!(
        !kh.contains("deb.vm") && !kh.contains(&alias) && !kh.contains(ip),
        "{kh}"
    );
    assert!(
        !home.data_dir().join("ssh/known_hosts").exists(),
        "the last VM gone, no known_hosts left: {kh}"
    );
    assert!(
        home.data_dir().join("ssh/id_ed25519").exists(),
        "the user key stays"
    );
}

fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

#[test]
fn shell_into_busybox_through_a_pty_and_ssh_points_there() {
    let Some(home) = boot_home() else { return };
    require_tool("script", "bsdutils");
    home.ok(&[
        "vm", "create", "busybox", "--name", "bb", "--memory", "256M",
    ]);
    home.ok(&["vm", "start", "bb"]);

    // No sshd in busybox: a clear error naming the way in.
    let (code, _, err) = run(&home, &["vm", "ssh", "bb", "--", "true"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("/usr/sbin/sshd") && err.contains("banger vm shell bb"),
        "{err}"
    );

    // util-linux script gives the CLI a real terminal; what we type goes
    // to the login shell through the guest's PTY.
    let banger = home.banger_std().get_program().to_owned();
    let mut child = tool(&home, "script")
        .args([
            "-qec",
            &format!("{} vm shell bb", banger.to_string_lossy()),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"tty; echo \"in-$((6*7))-$0\"; exit 3\n")
        .unwrap();
    // stdin stays open until the shell has exited (EOF would end the
    // session first); a watchdog stops a hung session.
    let pid = child.id();
    let (done, ended) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if ended.recv_timeout(Duration::from_secs(120)).is_err() {
            banger_testkit::kill9(pid.into());
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    drop(stdin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("in-42-"), "{stdout}");
    assert!(stdout.contains("/dev/pts/"), "a PTY in the guest: {stdout}");
    home.ok(&["vm", "rm", "--force", "bb"]);
}

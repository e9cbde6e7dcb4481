//! The whole path with a daemon that is not root, under QEMU, inside a
//! network namespace this test creates: a fresh test user (useradd,
//! removed at the end), a root `banger-helper --owner <uid>` on a socket in
//! a temp dir, that user's `bangerd` started the way `bangerd@.service`
//! starts it (as the user, `XDG_RUNTIME_DIR=/run/bangerd-<uid>`, the
//! helper socket in the environment), and a busybox VM with a NIC.
//!
//! QEMU runs as the user too and may not open /dev/net/tun (root's only
//! here): the daemon asks the helper for an open tap queue (`OpenTap`) and
//! hands it over as `-netdev tap,fd=N`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, bin_dir, boot_home_with, procs, require_tool};

const BRIDGE: &str = "bangeru0";
const GATEWAY: &str = "172.31.7.1";
/// A uid nobody has: neither the owner nor root.
const STRANGER: u32 = 4_242_424;

/// A user made for this test and removed with it.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn new() -> TestUser {
        require_tool("useradd", "passwd");
        let name = format!("bangert{}", std::process::id());
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        TestUser { name, uid, gid }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `banger-helper call OP` as `uid`, inside `ns`.
fn helper_call(ns: &NetNs, uid: u32, socket: &Path, op: &str) -> Output {
    ns.command("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(bin_dir().join("banger-helper"))
        .args(["call", "--socket"])
        .arg(socket)
        .arg(op)
        .output()
        .unwrap()
}

fn taps(ns: &NetNs) -> Vec<String> {
    let out = ns.ip(&["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("bgt"))
        .collect()
}

fn link_exists(ns: &NetNs, name: &str) -> bool {
    ns.command("ip")
        .args(["link", "show", name])
        .output()
        .unwrap()
        .status
        .success()
}

fn nft_table_exists(ns: &NetNs) -> bool {
    ns.command("nft")
        .args(["list", "table", "inet", "banger"])
        .output()
        .unwrap()
        .status
        .success()
}

/// QEMU processes of `uid`, with their command lines.
fn qemus_of(uid: u32) -> Vec<(u32, String)> {
    procs::all_pids()
        .into_iter()
        .filter(|pid| procs::uid_of(*pid) == Some(uid))
        .map(|pid| (pid, procs::cmdline(pid)))
        .filter(|(_, cmd)| cmd.contains("qemu-system"))
        .collect()
}

#[test]
fn a_users_daemon_gets_vm_networking_from_a_root_helper() {
    let helper_bin = bin_dir().join("banger-helper");
    assert!(
        helper_bin.exists(),
        "{} missing: cargo build --workspace --bins",
        helper_bin.display()
    );
    require_tool("setpriv", "util-linux");
    // Declared first, dropped last: the user outlives everything it owns.
    let user = TestUser::new();
    let ns = NetNs::new("nonroot");

    // The root helper, serving the test user only.
    let sock_dir = tempfile::Builder::new()
        .prefix("banger-helper-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(sock_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = sock_dir.path().join("helper.sock");
    let policy = sock_dir.path().join("helper.toml");
    std::fs::write(&policy, "").unwrap();
    let _helper = Proc(
        ns.command(helper_bin.to_str().unwrap())
            .args(["--owner", &user.uid.to_string(), "--socket"])
            .arg(&socket)
            // The helper's policy: root's, and the same network as the
            // owner's config (what `system install` writes).
            .args(["--bridge", BRIDGE, "--cidr", &format!("{GATEWAY}/24")])
            .arg("--config")
            .arg(&policy)
            .arg("--state")
            .arg(sock_dir.path().join("state.json"))
            .env("BANGER_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    wait_for("the helper socket", || socket.exists());

    // What systemd makes for bangerd@.service (RuntimeDirectory=): the CLI
    // must find the daemon there whatever its own XDG_RUNTIME_DIR says.
    let run_dir = banger_config::paths::system_runtime_dir(user.uid);
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir(&run_dir).unwrap();
    let _run_dir = Dir(run_dir.clone());
    std::os::unix::fs::chown(&run_dir, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    let config = format!(
        "[network]\nmode = \"bridge\"\nbridge = \"{BRIDGE}\"\nbridge_cidr = \"{GATEWAY}/24\"\n\
         dns_upstreams = [\"127.0.0.1:5300\"]\nhelper_socket = \"{}\"\n",
        socket.display()
    );
    let home = TestHome::with_config(&config)
        .in_netns(ns.name())
        .as_user(user.uid, user.gid);

    // The user's daemon, started as its unit starts it.
    let daemon_log = std::fs::File::create(home.path().join("unit-bangerd.log")).unwrap();
    let mut daemon = ns.command("setpriv");
    daemon
        .args([
            &format!("--reuid={}", user.uid),
            &format!("--regid={}", user.gid),
            "--clear-groups",
        ])
        .arg(bin_dir().join("bangerd"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("BANGER_HOME", home.data_dir())
        .env("BANGER_CONFIG", home.path().join("config.toml"))
        .env("XDG_RUNTIME_DIR", &run_dir)
        .env("BANGER_HELPER_SOCKET", &socket)
        .stdin(Stdio::null())
        .stdout(daemon_log.try_clone().unwrap())
        .stderr(daemon_log);
    if let Some(agent) = std::env::var_os("BANGER_AGENT_BIN") {
        daemon.env("BANGER_AGENT_BIN", agent);
    }
    let first = daemon.spawn().unwrap();
    let first_pid = first.id();
    std::mem::forget(first);
    wait_for("the unit-style daemon", || {
        home.banger_std()
            .args(["daemon", "status"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    // A CLI of a login session (another XDG_RUNTIME_DIR) finds that daemon.
    let elsewhere = home.path().join("xdg");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::chown(&elsewhere, Some(user.uid), Some(user.gid)).unwrap();
    let out = home
        .banger_std()
        .args(["daemon", "status", "--json"])
        .env("XDG_RUNTIME_DIR", &elsewhere)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["pid"], first_pid, "{info}");
    assert!(
        info["socket"]
            .as_str()
            .unwrap()
            .starts_with(run_dir.to_str().unwrap()),
        "{info}"
    );

    let Some(home) = boot_home_with(home) else {
        return;
    };
    home.ok(&[
        "vm", "create", "busybox", "--name", "web", "--cpus", "1", "--memory", "256M",
    ]);
    let report = home.json(&["vm", "start", "web", "--json"]);
    assert_eq!(report["vm"]["desired_state"], "running", "{report}");

    // The tap belongs to the user; QEMU runs as the user with the tap
    // handed over as a descriptor.
    let tap = taps(&ns);
    assert_eq!(tap.len(), 1, "{tap:?}");
    let owner = ns
        .command("cat")
        .arg(format!("/sys/class/net/{}/owner", tap[0]))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&owner.stdout).trim(),
        user.uid.to_string()
    );
    let qemus = qemus_of(user.uid);
    assert_eq!(qemus.len(), 1, "one QEMU of the user: {qemus:?}");
    let (qemu_pid, cmdline) = &qemus[0];
    let fd: u32 = cmdline
        .split("tap,id=net0,fd=")
        .nth(1)
        .and_then(|r| r.split([' ', ',']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no -netdev tap,fd=N: {cmdline}"));
    let target = std::fs::read_link(format!("/proc/{qemu_pid}/fd/{fd}")).unwrap();
    assert_eq!(target, Path::new("/dev/net/tun"));

    let ping = |home: &TestHome| {
        let out = home
            .banger_std()
            .args([
                "vm", "exec", "web", "--", "busybox", "ping", "-c1", "-W5", GATEWAY,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "ping the gateway: {}", text(&out));
    };
    ping(&home);

    // A third uid is refused by the helper; the owner is refused anything
    // not banger's.
    let out = helper_call(&ns, STRANGER, &socket, r#"{"op":"list_taps"}"#);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("uid {STRANGER} may not use the banger helper")),
        "{}",
        text(&out)
    );
    for (op, want) in [
        (
            r#"{"op":"ensure_bridge","name":"lo","cidr":"1.1.1.1/32"}"#,
            "unknown variant",
        ),
        (
            r#"{"op":"create_tap","vm_id":"00112233445566ff","ip":"8.8.8.8","mac":"02:00:00:00:00:09"}"#,
            "not a guest address",
        ),
    ] {
        let out = helper_call(&ns, user.uid, &socket, op);
        assert!(!out.status.success(), "{op}: {}", text(&out));
        assert!(text(&out).contains(want), "{op}: {}", text(&out));
    }
    assert!(link_exists(&ns, "lo"));

    // doctor, as the user, sees the helper and the bridge.
    let out = home
        .banger_std()
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = |name: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check: {checks}"))
            .clone()
    };
    let helper = check("helper");
    assert_eq!(helper["status"], "pass", "{helper}");
    assert!(
        helper["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("serves uid {}", user.uid)),
        "{helper}"
    );
    assert_eq!(check("bridge")["status"], "pass");
    assert_eq!(
        check("nft table")["status"],
        "pass",
        "{}",
        check("nft table")
    );
    let status = home.ok(&["system", "status"]);
    assert!(status.contains("helper:     reachable"), "{status}");

    // kill -9 of the daemon: the next one (started by the CLI) re-adopts.
    home.kill_daemon();
    ping(&home);
    assert_eq!(taps(&ns), tap, "the re-adopting daemon kept the tap");
    assert_eq!(qemus_of(user.uid).len(), 1);

    // Uninstall refuses while a VM runs, then after rm leaves nothing.
    let uninstall = |force: bool| {
        let mut c = ns.command(bin_dir().join("banger").to_str().unwrap());
        c.args(["system", "uninstall"])
            .env("BANGER_CONFIG", home.path().join("config.toml"))
            .env("BANGER_HOME", home.data_dir());
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let out = uninstall(false);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("VMs still run"), "{}", text(&out));
    assert!(
        link_exists(&ns, BRIDGE),
        "a refused uninstall removed the bridge"
    );

    home.ok(&["vm", "rm", "--force", "web"]);
    assert!(taps(&ns).is_empty(), "{:?}", taps(&ns));
    wait_for("QEMU to exit", || qemus_of(user.uid).is_empty());
    home.ok(&["daemon", "stop"]);
    let out = uninstall(false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!link_exists(&ns, BRIDGE), "bridge left: {}", text(&out));
    assert!(!nft_table_exists(&ns), "nft table left: {}", text(&out));
    assert!(taps(&ns).is_empty());
    // Twice is fine.
    let out = uninstall(false);
    assert!(out.status.success(), "{}", text(&out));
}

//! `system install|status|restart|uninstall` for real, with systemd as
//! PID 1: inside a Debian bookworm guest booted by banger under QEMU (this
//! machine's own systemd is not PID 1). The helper is the real
//! banger-helper behind a wrapper that first records what its sandbox lets
//! it see; the daemon is a stand-in script. So the test checks the units as
//! systemd applies them, and that the real helper serves under its sandbox.
//!
//! The image has no systemd-resolved (and the guest no network to fetch
//! it), so a stand-in `systemd-resolved.service` and a `resolvectl` that
//! logs its arguments take their places: what is under test is that the
//! split-DNS unit runs when the bridge's link appears and reverts when it
//! goes. The link is a `dummy` one (its module loaded from the kernel
//! package): a device unit is a device unit, bridge or not.
//!
//! Needs the kernel package, the agent and the Debian tarball
//! (BANGER_TEST_KERNEL_DEB, BANGER_AGENT_BIN, BANGER_TEST_DEBIAN_TAR);
//! without them it reports a skip, as the other Debian tests do.

use std::io::Write as _;
use std::process::{Command, Stdio};

use banger_testkit::{TestHome, boot_home, debian_rootfs_tar, require_tool};

const PREFIX: &str = "/opt/banger";

/// The helper's wrapper: what the sandbox grants, then the real helper.
const HELPER: &str = r#"#!/bin/sh
out=/run/banger-helper/sandbox
grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status > $out
id -u >> $out
touch /etc/banger-probe 2>/dev/null && echo etc-writable >> $out || echo etc-readonly >> $out
ls /home >/dev/null 2>&1 && echo home-visible >> $out || echo home-hidden >> $out
exec /opt/banger/bin/banger-helper.real "$@"
"#;

/// The stand-in daemon: who it runs as, where its runtime dir is, and a
/// child standing for a VMM, which must survive a daemon restart.
const DAEMON: &str = r#"#!/bin/sh
id -un > "$XDG_RUNTIME_DIR/whoami"
echo "$BANGER_HELPER_SOCKET" > "$XDG_RUNTIME_DIR/helper-socket"
if [ ! -e "$XDG_RUNTIME_DIR/vmm.pid" ]; then
    sleep 1000 < /dev/null > /dev/null 2>&1 &
    echo $! > "$XDG_RUNTIME_DIR/vmm.pid"
fi
exec sleep infinity
"#;

/// The stand-ins for systemd-resolved.
const RESOLVED_UNIT: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
const RESOLVECTL: &str = "#!/bin/sh\necho \"$@\" >> /run/resolvectl.log\n";

/// `kernel/drivers/net/dummy.ko` of the kernel package the guest boots.
fn dummy_module(deb: &std::path::Path, dir: &std::path::Path) -> Vec<u8> {
    let dpkg = require_tool("dpkg-deb", "dpkg");
    let out = Command::new(dpkg)
        .arg("--fsys-tarfile")
        .arg(deb)
        .output()
        .unwrap();
    assert!(out.status.success());
    let status = Command::new("tar")
        // -C before the member: GNU tar applies it to the names after it.
        .arg("-x")
        .arg("-C")
        .arg(dir)
        .args(["--wildcards", "*/kernel/drivers/net/dummy.ko"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&out.stdout)?;
            c.wait()
        })
        .unwrap();
    assert!(status.success());
    let modules = dir.join("lib/modules");
    let release = std::fs::read_dir(&modules)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::read(release.path().join("kernel/drivers/net/dummy.ko")).unwrap()
}

/// `banger vm exec VM -- sh -c SCRIPT`, stdin from `input`.
fn sh(home: &TestHome, vm: &str, script: &str, input: &[u8]) -> (i32, String, String) {
    let mut child = home
        .banger_std()
        .args(["vm", "exec", vm, "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(home: &TestHome, vm: &str, script: &str) -> String {
    let (code, out, err) = sh(home, vm, script, b"");
    assert_eq!(code, 0, "{script}\nstdout: {out}\nstderr: {err}");
    out
}

#[test]
fn install_status_restart_uninstall_under_systemd_in_a_debian_guest() {
    let Some(tar) = debian_rootfs_tar() else {
        return;
    };
    let Some(home) = boot_home() else { return };
    let deb = banger_testkit::kernel_deb().expect("boot_home needs it");
    let dummy = dummy_module(&deb, home.path());
    let strip = require_tool("strip", "binutils");
    let smoke = banger_testkit::bin_dir().join("examples/system_smoke");
    assert!(
        smoke.exists(),
        "{} missing: cargo test builds examples",
        smoke.display()
    );
    let stripped = home.path().join("system_smoke");
    let status = Command::new(strip)
        .arg("-o")
        .arg(&stripped)
        .arg(&smoke)
        .status()
        .unwrap();
    assert!(status.success());

    let helper = banger_testkit::bin_dir().join("banger-helper");
    assert!(
        helper.exists(),
        "{} missing: cargo build --workspace --bins",
        helper.display()
    );
    let helper_stripped = home.path().join("banger-helper");
    let status = Command::new(require_tool("strip", "binutils"))
        .arg("-o")
        .arg(&helper_stripped)
        .arg(&helper)
        .status()
        .unwrap();
    assert!(status.success());

    home.ok(&["image", "import", tar.to_str().unwrap(), "--name", "debian"]);
    home.ok(&["vm", "create", "debian", "--name", "sys"]);
    home.ok(&["vm", "start", "sys"]);
    // systemd finishes booting after the agent answers.
    // `--wait` alone returns at once while PID 1's bus is not up yet.
    let state = ok(
        &home,
        "sys",
        "for i in $(seq 120); do s=$(systemctl is-system-running --wait 2>/dev/null); \
         case $s in running|degraded) break;; esac; sleep 0.5; done; echo $s",
    );
    assert!(
        matches!(state.trim(), "running" | "degraded"),
        "systemd: {state}"
    );

    let (code, _, err) = sh(
        &home,
        "sys",
        "cat > /usr/local/bin/system_smoke && chmod 755 /usr/local/bin/system_smoke",
        &std::fs::read(&stripped).unwrap(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = sh(
        &home,
        "sys",
        &format!(
            "mkdir -p {PREFIX}/bin && cat > {PREFIX}/bin/banger-helper && chmod 755 {PREFIX}/bin/banger-helper"
        ),
        HELPER.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = sh(
        &home,
        "sys",
        &format!(
            "cat > {PREFIX}/bin/banger-helper.real && chmod 755 {PREFIX}/bin/banger-helper.real"
        ),
        &std::fs::read(&helper_stripped).unwrap(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = sh(
        &home,
        "sys",
        &format!("cat > {PREFIX}/bin/bangerd && chmod 755 {PREFIX}/bin/bangerd"),
        DAEMON.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    ok(&home, "sys", "useradd --uid 1000 --create-home alice");
    ok(&home, "sys", "useradd --uid 1001 --create-home bob");
    let (code, _, err) = sh(&home, "sys", "cat > /tmp/dummy.ko", &dummy);
    assert_eq!(code, 0, "{err}");
    ok(&home, "sys", "system_smoke insmod /tmp/dummy.ko");
    let (code, _, err) = sh(
        &home,
        "sys",
        "cat > /etc/systemd/system/systemd-resolved.service && systemctl daemon-reload && systemctl start systemd-resolved.service",
        RESOLVED_UNIT.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = sh(
        &home,
        "sys",
        "cat > /usr/bin/resolvectl && chmod 755 /usr/bin/resolvectl",
        RESOLVECTL.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let listing = "find /etc/systemd /run -path /run/user -prune -o -name 'banger*' -print | sort; find /etc/systemd | sort";
    let before = ok(&home, "sys", listing);

    // install: both services up, split DNS by hand (no resolved in the image).
    let out = ok(
        &home,
        "sys",
        &format!("system_smoke install {PREFIX} 1000 alice"),
    );
    assert!(
        out.contains("Resolved { unit: \"banger-split-dns.service\" }"),
        "{out}"
    );
    let active = ok(
        &home,
        "sys",
        "sleep 1; systemctl is-active banger-helper.service bangerd@alice.service",
    );
    assert_eq!(active, "active\nactive\n");

    // The helper's sandbox as systemd applied it: root, with exactly
    // CAP_NET_ADMIN (12) and CAP_NET_BIND_SERVICE (10), no new privileges,
    // a read-only /etc and no /home.
    let sandbox = ok(&home, "sys", "cat /run/banger-helper/sandbox");
    for line in [
        "CapEff:\t0000000000001400",
        "CapBnd:\t0000000000001400",
        "NoNewPrivs:\t1",
        "0",
        "etc-readonly",
        "home-hidden",
    ] {
        assert!(sandbox.lines().any(|l| l == line), "{line:?} in {sandbox}");
    }
    // The real helper serves under that sandbox: its socket is there
    // without CAP_CHOWN, alice gets answers (netlink works), bob is refused.
    let call = |user: &str, op: &str| {
        sh(
            &home,
            "sys",
            &format!(
                "runuser -u {user} -- {PREFIX}/bin/banger-helper.real call --socket /run/banger-helper/helper.sock '{op}'"
            ),
            b"",
        )
    };
    let (code, out, err) = call("alice", r#"{"op":"version"}"#);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(r#""owner":1000"#), "{out}");
    let (code, out, err) = call("alice", r#"{"op":"list_taps"}"#);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(r#""taps":[]"#), "{out}");
    let (code, out, err) = call("bob", r#"{"op":"version"}"#);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("uid 1001 may not use the banger helper"),
        "{err}"
    );
    let (code, _, err) = call(
        "alice",
        r#"{"op":"create_tap","vm_id":"0011223344556677","ip":"8.8.8.8","mac":"02:00:00:00:00:02"}"#,
    );
    assert_ne!(code, 0);
    assert!(err.contains("not a guest address"), "{err}");

    // The daemon: alice, in /run/bangerd-1000, told where the helper is.
    let daemon = ok(
        &home,
        "sys",
        "cat /run/bangerd-1000/whoami /run/bangerd-1000/helper-socket; stat -c '%U %a' /run/bangerd-1000",
    );
    assert_eq!(daemon, "alice\n/run/banger-helper/helper.sock\nalice 700\n");

    // Split DNS: nothing until the bridge appears, registered when it
    // does, reverted when it goes.
    let (_, idle, _) = sh(
        &home,
        "sys",
        "systemctl is-active banger-split-dns.service; cat /run/resolvectl.log 2>&1",
        b"",
    );
    assert!(
        idle.starts_with("inactive\n") && idle.contains("No such file"),
        "{idle}"
    );
    ok(&home, "sys", "ip link add banger0 type dummy");
    let log = ok(
        &home,
        "sys",
        "for i in $(seq 50); do systemctl -q is-active banger-split-dns.service && break; sleep 0.2; done; cat /run/resolvectl.log",
    );
    assert_eq!(
        log,
        "dns banger0 172.16.0.1\ndomain banger0 ~vm\ndefault-route banger0 false\n"
    );
    let status = ok(&home, "sys", "system_smoke status");
    assert!(status.contains("bridge:     banger0 present"), "{status}");
    assert!(
        status.contains("banger-split-dns.service active (enabled)"),
        "{status}"
    );
    ok(&home, "sys", "ip link del banger0");
    let log = ok(
        &home,
        "sys",
        "for i in $(seq 50); do systemctl -q is-active banger-split-dns.service || break; sleep 0.2; done; tail -1 /run/resolvectl.log",
    );
    assert_eq!(log, "revert banger0\n");

    let status = ok(&home, "sys", "system_smoke status");
    assert!(status.contains("owner:      alice (uid 1000)"), "{status}");
    assert!(
        status.contains("banger-helper.service active (enabled)"),
        "{status}"
    );
    assert!(
        status.contains("bangerd@alice.service active (enabled)"),
        "{status}"
    );

    // A restart stops only bangerd: the stand-in VMM lives on, and the
    // runtime dir holding its pid (as VM sockets would be) is kept.
    let vmm = ok(&home, "sys", "cat /run/bangerd-1000/vmm.pid");
    let vmm = vmm.trim();
    ok(&home, "sys", "system_smoke restart");
    let alive = ok(
        &home,
        "sys",
        &format!(
            "sleep 1; systemctl is-active bangerd@alice.service; kill -0 {vmm} && echo vmm-alive; cat /run/bangerd-1000/vmm.pid"
        ),
    );
    assert_eq!(alive, format!("active\nvmm-alive\n{vmm}\n"));

    // uninstall: nothing of banger left in systemd's view or on disk.
    ok(&home, "sys", &format!("kill {vmm}"));
    let out = ok(&home, "sys", "system_smoke uninstall");
    assert!(out.contains("banger-helper.service"), "{out}");
    let (_, gone, _) = sh(
        &home,
        "sys",
        "systemctl is-active banger-helper.service bangerd@alice.service; ls /run/banger-helper /run/bangerd-1000 2>&1",
        b"",
    );
    assert!(gone.starts_with("inactive\ninactive\n"), "{gone}");
    assert_eq!(
        gone.matches("No such file or directory").count(),
        2,
        "{gone}"
    );
    assert_eq!(
        ok(&home, "sys", listing),
        before,
        "the unit tree is as before"
    );
    let status = ok(&home, "sys", "system_smoke status");
    assert!(status.contains("owner:      not installed"), "{status}");

    home.ok(&["vm", "kill", "sys"]);
    home.ok(&["vm", "rm", "sys"]);
}

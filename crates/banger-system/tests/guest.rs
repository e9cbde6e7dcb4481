//! `system install|status|restart|uninstall` for real, with systemd as
//! PID 1: inside a Debian bookworm guest booted by banger under QEMU (this
//! machine's own systemd is not PID 1). The helper and daemon are stand-in
//! scripts that record what their sandbox lets them see, so the test checks
//! the units as systemd applies them, not only their syntax.
//!
//! Needs the kernel package, the agent and the Debian tarball
//! (BANGER_TEST_KERNEL_DEB, BANGER_AGENT_BIN, BANGER_TEST_DEBIAN_TAR);
//! without them it reports a skip, as the other Debian tests do.

use std::io::Write as _;
use std::process::{Command, Stdio};

use banger_testkit::{TestHome, boot_home, debian_rootfs_tar, require_tool};

const PREFIX: &str = "/opt/banger";

/// The stand-in helper: what the sandbox grants, then idle like the helper.
const HELPER: &str = r#"#!/bin/sh
out=/run/banger-helper/sandbox
grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status > $out
id -u >> $out
touch /etc/banger-probe 2>/dev/null && echo etc-writable >> $out || echo etc-readonly >> $out
ls /home >/dev/null 2>&1 && echo home-visible >> $out || echo home-hidden >> $out
exec sleep infinity
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

    home.ok(&["image", "import", tar.to_str().unwrap(), "--name", "debian"]);
    home.ok(&["vm", "create", "debian", "--name", "sys"]);
    home.ok(&["vm", "start", "sys"]);
    // systemd finishes booting after the agent answers.
    ok(
        &home,
        "sys",
        "systemctl is-system-running --wait >/dev/null; true",
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
        &format!("cat > {PREFIX}/bin/bangerd && chmod 755 {PREFIX}/bin/bangerd"),
        DAEMON.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    ok(&home, "sys", "useradd --uid 1000 --create-home alice");
    let listing = "find /etc/systemd /run -path /run/user -prune -o -name 'banger*' -print | sort; find /etc/systemd | sort";
    let before = ok(&home, "sys", listing);

    // install: both services up, split DNS by hand (no resolved in the image).
    let out = ok(
        &home,
        "sys",
        &format!("system_smoke install {PREFIX} 1000 alice"),
    );
    assert!(out.contains("server=/vm/172.16.0.1"), "{out}");
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
    // The daemon: alice, in /run/bangerd-alice, told where the helper is.
    let daemon = ok(
        &home,
        "sys",
        "cat /run/bangerd-alice/whoami /run/bangerd-alice/helper-socket; stat -c '%U %a' /run/bangerd-alice",
    );
    assert_eq!(daemon, "alice\n/run/banger-helper/helper.sock\nalice 700\n");

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
    let vmm = ok(&home, "sys", "cat /run/bangerd-alice/vmm.pid");
    let vmm = vmm.trim();
    ok(&home, "sys", "system_smoke restart");
    let alive = ok(
        &home,
        "sys",
        &format!(
            "sleep 1; systemctl is-active bangerd@alice.service; kill -0 {vmm} && echo vmm-alive; cat /run/bangerd-alice/vmm.pid"
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
        "systemctl is-active banger-helper.service bangerd@alice.service; ls /run/banger-helper /run/bangerd-alice 2>&1",
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

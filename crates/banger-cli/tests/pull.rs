//! `banger image pull` from a real registry on loopback, then a boot of the
//! pulled image under QEMU with its config (Entrypoint, Cmd, Env,
//! WorkingDir, User) honoured by `vm run`, and `-u` resolved in the guest.

use banger_testkit::registry::{Comp, Image, Registry, TarBuilder, layer, single_image_layout};
use banger_testkit::{TestHome, agent_bin, kernel_deb, require_tool};

/// Two layers: busybox with its applets and users, then one that adds the
/// entrypoint and the working directory and whites out a file of the first.
/// The config runs it as `app`, a user of its `/etc/passwd`.
fn busybox_image() -> Image {
    let busybox = std::fs::read(require_tool("busybox", "busybox-static")).unwrap();
    let mut base = TarBuilder::default();
    base.dir("bin");
    base.executable("bin/busybox", &busybox);
    for applet in [
        "sh", "cat", "echo", "pwd", "ls", "true", "id", "tty", "stat",
    ] {
        base.symlink(&format!("bin/{applet}"), "busybox");
    }
    for d in [
        "root", "etc", "proc", "sys", "dev", "tmp", "run", "home", "home/app",
    ] {
        base.dir(d);
    }
    base.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n",
    );
    base.file(
        "etc/group",
        b"root:x:0:\nwheel:x:10:root,app\nstaff:x:50:app\napp:x:1000:\n",
    );
    base.file("etc/doomed", b"removed by the next layer\n");
    let mut top = TarBuilder::default();
    top.dir("bin").dir("srv").dir("etc");
    top.executable("bin/entry", b"#!/bin/sh\necho entry: \"$@\"\nexec \"$@\"\n");
    top.file("etc/.wh.doomed", b"");
    Image {
        arch: "amd64",
        variant: None,
        layers: vec![
            layer(&base.finish(), Comp::Gzip),
            layer(&top.finish(), Comp::Zstd),
        ],
        cmd: vec!["sh", "-c", "echo $LANG in $(pwd); ls /etc"],
        user: "app",
    }
}

#[test]
fn pulled_image_boots_with_its_config() {
    let Some(deb) = kernel_deb() else { return };
    agent_bin();
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    let registry = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    single_image_layout(layout.path(), "1", &busybox_image());
    registry.push(layout.path(), "1", "tools/busybox:1", None, false);

    let home = TestHome::new();
    home.ok(&["kernel", "import", "--deb", deb.to_str().unwrap()]);
    let reference = format!("{}/tools/busybox:1", registry.addr);
    assert_eq!(home.ok(&["image", "pull", &reference]).trim(), "busybox:1");
    let img = home.json(&["image", "show", "busybox:1", "--json"]);
    assert_eq!(img["source"]["kind"], "registry");
    assert!(
        img["source"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(img["config"]["working_dir"], "/srv");
    assert_eq!(
        img["config"]["entrypoint"],
        serde_json::json!(["/bin/entry"])
    );
    // Pulling again is a no-op: same record.
    let again = home.json(&["image", "pull", &reference, "--json"]);
    assert_eq!(again["id"], img["id"]);

    let out = home.ok(&["vm", "run", "busybox:1", "--rm", "--memory", "256M"]);
    assert!(out.contains("entry: sh -c"), "entrypoint runs first: {out}");
    assert!(
        out.contains("C.UTF-8 in /srv"),
        "Env and WorkingDir apply: {out}"
    );
    assert!(
        !out.contains("doomed"),
        "the whiteout removed /etc/doomed: {out}"
    );
    let out = home.ok(&[
        "vm",
        "run",
        "busybox:1",
        "--rm",
        "--memory",
        "256M",
        "--",
        "id",
    ]);
    assert!(
        out.contains("entry: id\n"),
        "the arguments replace Cmd: {out}"
    );
    assert_eq!(
        out.lines().nth(1),
        Some("uid=1000(app) gid=1000(app) groups=10(wheel),50(staff),1000(app)"),
        "User applies, with the groups listing the user: {out}"
    );

    // `vm exec` runs as root unless -u says otherwise; one VM for every form.
    home.ok(&[
        "vm",
        "create",
        "busybox:1",
        "--name",
        "users",
        "--memory",
        "256M",
    ]);
    home.ok(&["vm", "start", "users"]);
    let exec = |args: &[&str]| {
        let mut a = vec!["vm", "exec", "users"];
        a.extend_from_slice(args);
        home.ok(&a)
    };
    let out = exec(&["--", "id"]);
    assert!(out.starts_with("uid=0(root) gid=0(root)"), "{out}");
    assert_eq!(
        exec(&["-u", "0", "--", "id"]),
        "uid=0(root) gid=0(root) groups=0(root),10(wheel)\n"
    );
    assert_eq!(
        exec(&["-u", "1234:5678", "--", "id"]),
        "uid=1234 gid=5678 groups=5678\n"
    );
    assert_eq!(
        exec(&["--user", "app:staff", "--", "id"]),
        "uid=1000(app) gid=50(staff) groups=10(wheel),50(staff)\n",
        "the group replaces the passwd gid; the user's memberships stay"
    );
    assert_eq!(
        exec(&["-u", "app", "--", "sh", "-c", "echo $HOME $USER $(pwd)"]),
        "/home/app app /home/app\n",
        "HOME, USER and the default cwd come from the passwd entry"
    );
    let out = exec(&[
        "-t",
        "-u",
        "app",
        "--",
        "sh",
        "-c",
        "id -u; stat -c %U $(tty)",
    ]);
    assert_eq!(
        out, "1000\r\napp\r\n",
        "a pty exec runs as the user and owns its tty"
    );
    let err = home.fails(&["vm", "exec", "users", "-u", "nobodyx", "--", "id"]);
    assert!(
        err.ends_with(": unable to find user nobodyx: no matching entries in passwd file"),
        "{err}"
    );
    home.ok(&["vm", "rm", "-f", "users"]);

    let err = home.fails(&["image", "pull", "Not A Ref"]);
    assert!(
        err.contains("reference") || err.contains("invalid"),
        "{err}"
    );
    let err = home.fails(&[
        "image",
        "pull",
        &format!("{}/tools/missing:1", registry.addr),
    ]);
    assert!(err.starts_with("banger: "), "{err}");
    assert_eq!(
        home.json(&["image", "ls", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

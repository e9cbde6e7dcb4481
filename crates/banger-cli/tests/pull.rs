//! `banger image pull` from a real registry on loopback, then a boot of the
//! pulled image under QEMU with its config (Entrypoint, Cmd, Env,
//! WorkingDir) honoured by `vm run`.

use banger_testkit::registry::{Comp, Image, Registry, TarBuilder, layer, single_image_layout};
use banger_testkit::{TestHome, agent_bin, kernel_deb, require_tool};

/// Two layers: busybox with its applets, then one that adds the entrypoint
/// and the working directory and whites out a file of the first.
fn busybox_image() -> Image {
    let busybox = std::fs::read(require_tool("busybox", "busybox-static")).unwrap();
    let mut base = TarBuilder::default();
    base.dir("bin");
    base.executable("bin/busybox", &busybox);
    for applet in ["sh", "cat", "echo", "pwd", "ls", "true"] {
        base.symlink(&format!("bin/{applet}"), "busybox");
    }
    for d in ["root", "etc", "proc", "sys", "dev", "tmp", "run"] {
        base.dir(d);
    }
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
        "echo",
        "given",
    ]);
    assert!(
        out.contains("entry: echo given") && out.contains("\ngiven\n"),
        "{out}"
    );

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

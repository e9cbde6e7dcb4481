//! `kernel pull` and `kernel catalog` against a loopback HTTP server the
//! test runs: checksums are verified before anything is imported, and a
//! kernel the configured VMM cannot boot is refused at `vm create`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

use banger_testkit::{TestHome, kernel_deb, registry::sha256, tiny_rootfs};

/// Serves `files` (path -> body) over HTTP/1.1 on 127.0.0.1 until the
/// process ends; returns `http://127.0.0.1:PORT`.
fn serve(files: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let files = files.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&conn);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                // Drain the headers.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let mut out = &conn;
                match files.get(path) {
                    Some(body) => {
                        let _ = write!(
                            out,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = out.write_all(body);
                    }
                    None => {
                        let _ = out.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            });
        }
    });
    base
}

fn hex_sha(bytes: &[u8]) -> String {
    sha256(bytes).trim_start_matches("sha256:").to_string()
}

fn catalog_entry(name: &str, url: &str, sha: &str, format: &str) -> String {
    format!(
        "[[kernel_catalog]]\nname = \"{name}\"\nurl = \"{url}\"\nsha256 = \"{sha}\"\nformat = \"{format}\"\n"
    )
}

#[test]
fn pull_imports_only_what_matches_its_checksum() {
    let scratch = tempfile::tempdir().unwrap();
    let k = scratch.path().join("bzImage");
    banger_testkit::fake_bzimage(&k, "6.6.0-pulled");
    let bytes = std::fs::read(&k).unwrap();
    let base = serve(HashMap::from([("/k/bzImage".to_string(), bytes.clone())]));
    let url = format!("{base}/k/bzImage");
    let config = format!(
        "vmm = \"firecracker\"\n{}{}{}",
        catalog_entry("tiny", &url, &hex_sha(&bytes), "bzImage"),
        // The right file under a checksum of something else: a tampered
        // download as far as banger can tell.
        catalog_entry("tampered", &url, &hex_sha(b"other bytes"), "bzImage"),
        catalog_entry(
            "gone",
            &format!("{base}/missing"),
            &hex_sha(b"x"),
            "vmlinux"
        ),
    );
    let home = TestHome::with_config(&config);

    let catalog = home.json(&["kernel", "catalog", "--json"]);
    let names: Vec<&str> = catalog
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"debian-cloud-6.1.0-57"), "{names:?}");
    assert!(
        names.contains(&"tiny") && names.contains(&"tampered"),
        "{names:?}"
    );
    let tiny = catalog
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "tiny")
        .unwrap();
    assert_eq!(tiny["origin"], "config");
    assert_eq!(tiny["format"], "bzImage");
    assert!(home.ok(&["kernel", "catalog"]).contains("tampered"));

    let err = home.fails(&["kernel", "pull", "tampered"]);
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(err.contains(&hex_sha(&bytes)), "names what arrived: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let err = home.fails(&["kernel", "pull", "gone"]);
    assert!(err.contains("404"), "{err}");
    let err = home.fails(&["kernel", "pull", "nosuch"]);
    assert!(err.contains("banger kernel catalog"), "{err}");
    assert_eq!(
        home.json(&["kernel", "ls", "--json"]),
        serde_json::json!([])
    );
    let left: Vec<String> = home
        .data_files()
        .into_iter()
        .filter(|f| f.starts_with("tmp/") || f.starts_with("kernels/"))
        .collect();
    assert!(left.is_empty(), "failed pulls left {left:?}");

    let name = home.ok(&["kernel", "pull", "tiny", "--name", "t1"]);
    assert_eq!(name.trim(), "t1");
    let k = home.json(&["kernel", "show", "t1", "--json"]);
    assert_eq!(k["release"], "6.6.0-pulled");
    // A bzImage with no payload: QEMU might boot it, Firecracker cannot.
    let fc = &k["vmm_support"][0];
    assert_eq!(fc["vmm"], "firecracker");
    assert_eq!(fc["bootable"], "no");
    let shown = home.ok(&["kernel", "show", "t1"]);
    let line = shown
        .lines()
        .find(|l| l.starts_with("firecracker: "))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        line.starts_with("firecracker: no (it needs an ELF vmlinux"),
        "{line}"
    );
    assert!(shown.contains("qemu: unknown (no kernel config"), "{shown}");

    // The configured VMM is firecracker: vm create says why not, and makes nothing.
    let root = scratch.path().join("root");
    tiny_rootfs(&root);
    home.ok(&["image", "import", root.to_str().unwrap(), "--name", "tiny"]);
    let err = home.fails(&["vm", "create", "tiny", "--name", "v1"]);
    assert!(
        err.contains("kernel t1 cannot boot under firecracker: it needs an ELF vmlinux"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(home.json(&["vm", "ls", "--json"]), serde_json::json!([]));
}

/// What apt says of the package `deb` is (its file name gives package and
/// version): its pool path and SHA-256.
fn apt_record(deb: &std::path::Path) -> (String, String) {
    let file = deb.file_name().unwrap().to_str().unwrap();
    let mut parts = file.trim_end_matches(".deb").split('_');
    let (package, version) = (parts.next().unwrap(), parts.next().unwrap());
    let version = version.replace("%3a", ":");
    let out = std::process::Command::new("apt-cache")
        .args(["show", &format!("{package}={version}")])
        .output()
        .expect("apt-cache (apt) is required for this test");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("apt-cache show {package}={version} has no {name}: {text}"))
            .trim()
            .to_string()
    };
    (field("Filename:"), field("SHA256:"))
}

/// The real package, whatever version apt resolves today: its bytes have
/// the checksum apt records; a catalog entry made from that record pulls,
/// verifies and imports it from a mirror path; and the shipped entry, when
/// it pins this very version, carries the same checksum.
#[test]
fn the_real_debian_package_pulls_by_its_apt_checksum() {
    let Some(deb) = kernel_deb() else { return };
    let bytes = std::fs::read(&deb).unwrap();
    let (pool_path, apt_sha) = apt_record(&deb);
    assert_eq!(
        hex_sha(&bytes),
        apt_sha,
        "the fetched package is the one apt records"
    );

    let home = TestHome::new();
    let catalog = home.json(&["kernel", "catalog", "--json"]);
    let shipped = catalog
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["origin"] == "builtin")
        .cloned()
        .expect("a shipped Debian entry");
    let shipped_path = shipped["url"].as_str().unwrap();
    assert!(
        shipped_path.starts_with("pool/") && shipped_path.ends_with("_amd64.deb"),
        "{shipped_path}"
    );
    if shipped_path == pool_path {
        assert_eq!(shipped["sha256"].as_str().unwrap(), apt_sha);
    } else {
        eprintln!("the shipped entry pins {shipped_path}; apt now resolves {pool_path}");
    }
    drop(home);

    let base = serve(HashMap::from([(
        format!("/debian-security/{pool_path}"),
        bytes,
    )]));
    let home = TestHome::with_config(&format!(
        "kernel_mirror = \"{base}/debian-security\"\n\n[[kernel_catalog]]\nname = \"debian-apt\"\nurl = \"{pool_path}\"\nsha256 = \"{apt_sha}\"\nformat = \"deb\"\n"
    ));
    let name = home.ok(&["kernel", "pull", "debian-apt"]);
    let k = home.json(&["kernel", "show", name.trim(), "--json"]);
    let release = k["release"].as_str().unwrap();
    assert!(
        release.ends_with("-cloud-amd64") && pool_path.contains(release),
        "{release} from {pool_path}"
    );
    assert!(k["vmlinux_path"].as_str().unwrap().ends_with("/vmlinux"));
    let shown = home.ok(&["kernel", "show", name.trim()]);
    assert!(shown.contains("firecracker: yes"), "{shown}");
    assert!(shown.contains("qemu: yes"), "{shown}");
}

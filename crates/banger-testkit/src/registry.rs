//! A real registry for tests: Debian's `docker-registry` (distribution v2)
//! on loopback, OCI image layouts built in memory, `skopeo copy` to push
//! them, and a bearer-token proxy. Missing tools fail the tests with the
//! package to install. Traffic stays on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use crate::require_tool;

/// A `docker-registry` process on 127.0.0.1 with private storage.
#[allow(missing_debug_implementations)] // holds a process or a builder
pub struct Registry {
    pub addr: String,
    pub storage: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with_auth(None)
    }

    /// With `Some((user, password))` the registry demands HTTP basic auth
    /// (htpasswd, bcrypt).
    pub fn start_with_auth(creds: Option<(&str, &str)>) -> Registry {
        let bin = require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some((user, pass)) = creds {
            let hash = bcrypt::hash(pass, 4).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: banger-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reg = Registry {
            addr,
            storage,
            child,
            _dir: dir,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(200 | 401) = http_status(&self.addr, "/v2/") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "registry on {} never answered",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `skopeo copy` an OCI layout tag into this registry as `name:tag`.
    /// `all` copies every manifest of an index.
    pub fn push(
        &self,
        layout: &Path,
        tag: &str,
        name: &str,
        creds: Option<(&str, &str)>,
        all: bool,
    ) {
        let skopeo = require_tool("skopeo", "skopeo");
        let mut cmd = Command::new(skopeo);
        // Exact digests: without this skopeo gzips uncompressed layers.
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.arg("--all");
        }
        if let Some((u, p)) = creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}", self.addr))
            .env("HOME", layout)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Push a root filesystem tarball as a one-layer image `name:tag`, the
    /// way `skopeo copy tarball:ROOTFS.tar docker://...` publishes one:
    /// an OCI manifest whose single layer skopeo gzips on the way
    /// (`application/vnd.oci.image.layer.v1.tar+gzip`, diff_id the digest
    /// of the tarball itself), and a config with the host's `os` and
    /// `architecture`, one history entry and an empty `config`: no Env,
    /// Entrypoint or Cmd (the transport takes those only through
    /// containers/image's Go API, not skopeo's flags). Returns the
    /// manifest digest.
    pub fn push_rootfs_tarball(&self, tar: &Path, name_with_tag: &str) -> String {
        let skopeo = require_tool("skopeo", "skopeo");
        // A private HOME: no auth.json or registries.conf of the caller's.
        let home = tempfile::tempdir().unwrap();
        let digest_file = home.path().join("digest");
        let out = Command::new(skopeo)
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(format!("tarball:{}", tar.display()))
            .arg(format!("docker://{}/{name_with_tag}", self.addr))
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy tarball:{} failed: {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let digest = std::fs::read_to_string(&digest_file).unwrap();
        assert!(digest.starts_with("sha256:"), "skopeo digest: {digest}");
        digest.trim().to_string()
    }

    /// The registry's stored copy of a blob (to corrupt it).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn http_status(addr: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Tar entries, written with raw names so hostile paths survive.
#[allow(missing_debug_implementations)] // holds a process or a builder
pub struct TarBuilder(tar::Builder<Vec<u8>>);

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder(tar::Builder::new(Vec::new()))
    }
}

impl TarBuilder {
    fn entry(
        &mut self,
        path: &str,
        kind: EntryType,
        link: &str,
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        {
            let old = h.as_old_mut();
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.entry(path, EntryType::Directory, "", b"", 0o755)
    }
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.entry(path, EntryType::Regular, "", data, 0o644)
    }
    pub fn executable(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.entry(path, EntryType::Regular, "", data, 0o755)
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, EntryType::Symlink, target, b"", 0o777)
    }
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, EntryType::Link, target, b"", 0o644)
    }
    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Char);
        h.set_path(path).unwrap();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_mode(0o666);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.0.append(&h, &[][..]).unwrap();
        self
    }
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap()
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// A layer blob and its media type.
pub fn layer(tar: &[u8], comp: Comp) -> (Vec<u8>, &'static str) {
    match comp {
        Comp::None => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Comp::Zstd => (
            zstd::encode_all(tar, 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    }
}

/// One image in an OCI layout.
#[derive(Debug)]
pub struct Image {
    pub arch: &'static str,
    pub variant: Option<&'static str>,
    pub layers: Vec<(Vec<u8>, &'static str)>,
    pub cmd: Vec<&'static str>,
    /// The config's `User`.
    pub user: &'static str,
}

/// What was written, by digest.
#[derive(Debug)]
pub struct Written {
    pub manifest: String,
    pub config: String,
    pub layers: Vec<String>,
}

fn put_blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let d = sha256(bytes);
    let p = dir
        .join("blobs/sha256")
        .join(d.strip_prefix("sha256:").unwrap());
    std::fs::write(p, bytes).unwrap();
    (d, bytes.len())
}

fn write_image(dir: &Path, img: &Image) -> (serde_json::Value, Written) {
    let diff_ids: Vec<String> = img
        .layers
        .iter()
        .map(|(blob, mt)| {
            let tar = if mt.ends_with("gzip") {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&blob[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            } else if mt.ends_with("zstd") {
                zstd::decode_all(&blob[..]).unwrap()
            } else {
                blob.clone()
            };
            sha256(&tar)
        })
        .collect();
    let mut platform = serde_json::json!({"os": "linux", "architecture": img.arch});
    if let Some(v) = img.variant {
        platform["variant"] = v.into();
    }
    let mut config = serde_json::json!({
        "architecture": img.arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"], "WorkingDir": "/srv",
                   "User": img.user, "Entrypoint": ["/bin/entry"], "Cmd": img.cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(v) = img.variant {
        config["variant"] = v.into();
    }
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let (config_digest, config_size) = put_blob(dir, &config_bytes);
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for (blob, mt) in &img.layers {
        let (d, size) = put_blob(dir, blob);
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": size}));
        layers.push(d);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": descs,
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let (md, msize) = put_blob(dir, &bytes);
    let desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": msize, "platform": platform,
    });
    (
        desc,
        Written {
            manifest: md,
            config: config_digest,
            layers,
        },
    )
}

fn layout_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// An OCI layout at `dir` whose `index.json` tags one image as `tag`.
pub fn single_image_layout(dir: &Path, tag: &str, img: &Image) -> Written {
    layout_dir(dir);
    let (mut desc, written) = write_image(dir, img);
    desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [desc]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    written
}

/// An OCI layout whose `tag` names an image index of several platforms.
pub fn multi_platform_layout(dir: &Path, tag: &str, imgs: &[Image]) -> (String, Vec<Written>) {
    layout_dir(dir);
    let mut descs = Vec::new();
    let mut all = Vec::new();
    for img in imgs {
        let (desc, w) = write_image(dir, img);
        descs.push(desc);
        all.push(w);
    }
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descs,
    });
    let bytes = serde_json::to_vec(&nested).unwrap();
    let (d, size) = put_blob(dir, &bytes);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    (d, all)
}

/// A loopback front for a [`Registry`] that demands bearer tokens, as
/// Docker Hub does: unauthenticated requests get a `Bearer` challenge
/// naming `/token` here, which hands out a token for the right basic
/// credentials; requests with that token are relayed to the registry.
/// (distribution's own `token` auth needs a JWT-signing token server.)
#[allow(missing_debug_implementations)] // holds a process or a builder
pub struct TokenProxy {
    pub addr: String,
    /// The query strings of every token request seen.
    pub token_requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

const TOKEN: &str = "banger-test-token";

impl TokenProxy {
    pub fn start(upstream: &str, user: &str, pass: &str) -> TokenProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let token_requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let basic = format!("Basic {}", base64_std(format!("{user}:{pass}").as_bytes()));
        let (seen, up, me) = (token_requests.clone(), upstream.to_string(), addr.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (seen, up, me, basic) = (seen.clone(), up.clone(), me.clone(), basic.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(conn, &up, &me, &basic, &seen);
                });
            }
        });
        TokenProxy {
            addr,
            token_requests,
        }
    }
}

fn serve_one(
    mut conn: TcpStream,
    upstream: &str,
    me: &str,
    basic: &str,
    seen: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
        if conn.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let auth = header("authorization").unwrap_or_default();
    if let Some(query) = target.strip_prefix("/token?") {
        seen.lock().unwrap().push(query.to_string());
        return if auth == basic {
            let body = format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#);
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            write!(
                conn,
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        };
    }
    if auth != format!("Bearer {TOKEN}") {
        let scope = target
            .strip_prefix("/v2/")
            .and_then(|p| p.rsplit_once("/manifests/").or(p.rsplit_once("/blobs/")))
            .map(|(name, _)| format!(",scope=\"repository:{name}:pull\""))
            .unwrap_or_default();
        return write!(
            conn,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"proxy\"{scope}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    // Relay with the client's Accept header; the upstream has no auth.
    let mut up = TcpStream::connect(upstream)?;
    let accept = header("accept").unwrap_or_else(|| "*/*".into());
    write!(
        up,
        "{method} {target} HTTP/1.0\r\nHost: {upstream}\r\nAccept: {accept}\r\n\r\n"
    )?;
    std::io::copy(&mut up, &mut conn)?;
    Ok(())
}

/// A TCP relay on loopback that passes the upstream's answers on at most
/// `bytes_per_sec`, so a test can act while a download is under way.
#[derive(Debug)]
pub struct SlowProxy {
    pub addr: String,
}

impl SlowProxy {
    pub fn start(upstream: &str, bytes_per_sec: u64) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(up) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_read, mut up_write) =
                    (client.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut up_write);
                    let _ = up_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || relay_throttled(up, client, bytes_per_sec));
            }
        });
        SlowProxy { addr }
    }
}

fn relay_throttled(mut from: TcpStream, mut to: TcpStream, bytes_per_sec: u64) {
    let chunk = (bytes_per_sec / 20).max(1) as usize;
    let mut buf = vec![0u8; chunk];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

pub fn base64_std(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A one-layer image of static busybox with `sh`, the usual top-level
/// directories and a root passwd entry: the least that boots and pulls fast.
pub fn minimal_busybox_image() -> Image {
    let busybox = std::fs::read(require_tool("busybox", "busybox-static")).unwrap();
    let mut base = TarBuilder::default();
    base.dir("bin");
    base.executable("bin/busybox", &busybox);
    base.symlink("bin/sh", "busybox");
    for d in ["root", "etc", "proc", "sys", "dev", "tmp", "run"] {
        base.dir(d);
    }
    base.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n");
    Image {
        arch: "amd64",
        variant: None,
        layers: vec![layer(&base.finish(), Comp::Gzip)],
        cmd: vec!["sh"],
        user: "root",
    }
}

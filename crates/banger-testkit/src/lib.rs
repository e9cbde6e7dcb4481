//! Fixtures for tests that drive the real binaries: a private banger home
//! (data dir, config, socket) per test, a tiny root filesystem tree, and
//! checks that fail loudly when a required host tool is missing, and
//! network namespaces for tests that touch links and rules ([`netns`]).
//!
//! Tests never share a daemon: each [`TestHome`] starts its own on first use
//! and stops it when dropped.

pub mod firecracker;
pub mod http;
pub mod netns;
pub mod procs;
pub mod registry;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Panic with the fix when a tool the test needs is absent. Tests never skip
/// silently: a machine without the tool cannot vouch for the feature.
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    for d in dirs
        .iter()
        .map(PathBuf::as_path)
        .chain(["/usr/sbin", "/sbin"].map(Path::new))
    {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("this test needs `{name}`: apt-get install {package}");
}

/// Directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/test-xxxx -> target/debug
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir")
        .to_path_buf();
    for bin in ["banger", "bangerd", "banger-rootfs"] {
        assert!(
            dir.join(bin).exists(),
            "{} missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// `kill -9 PID`, asserting it was delivered.
pub fn kill9(pid: i64) {
    let ok = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -9 {pid} failed");
    // A crash is over when the process is gone (or a zombie nobody reaps):
    // only then has the kernel closed its files and released its locks.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if !procs::alive(pid) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("pid {pid} still alive 10s after kill -9");
}

/// A private banger installation: its own data dir, config and socket.
#[derive(Debug)]
pub struct TestHome {
    pub dir: tempfile::TempDir,
    bins: PathBuf,
    /// Run every `banger` (and so the daemon it starts) inside this
    /// network namespace: tests that give VMs a NIC never touch the
    /// host's own network.
    netns: Option<String>,
    /// Run every `banger` (and so its daemon) as this uid/gid, through
    /// `setpriv`: the non-root path.
    user: Option<(u32, u32)>,
    /// More environment for every command (`BANGER_HOST`, ...).
    extra_env: Vec<(&'static str, std::ffi::OsString)>,
}

impl TestHome {
    pub fn new() -> Self {
        Self::with_config("")
    }

    /// A home whose config.toml holds `config`. Unless `config` has a
    /// `[network]` section of its own, host networking is off: tests run
    /// as root, and a root daemon with networking on would make its bridge
    /// and NAT in the host's own network. Tests that give VMs a NIC set
    /// `[network]` and run in a namespace they made ([`Self::in_netns`]).
    pub fn with_config(config: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("banger-test-")
            .tempdir()
            .expect("tempdir");
        let config = if config.contains("[network]") {
            config.to_string()
        } else {
            format!("{config}\n[network]\nmode = \"none\"\n")
        };
        // Boot templates only where a test asks for them: made in the
        // background after every first cold start, they would double
        // the boots of a suite whose homes are all new.
        let config = if config.contains("warm_templates") {
            config
        } else if let Some(at) = config.find("[vm]\n") {
            let mut c = config.clone();
            c.insert_str(at + 5, "warm_templates = false\n");
            c
        } else {
            format!("{config}\n[vm]\nwarm_templates = false\n")
        };
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        Self {
            dir,
            bins: bin_dir(),
            netns: None,
            user: None,
            extra_env: Vec::new(),
        }
    }

    /// Give every command of this home `key=value` too (`BANGER_HOST`
    /// sends them all to a remote daemon). Set before the first command.
    pub fn with_env(mut self, key: &'static str, value: impl Into<std::ffi::OsString>) -> Self {
        self.extra_env.push((key, value.into()));
        self
    }

    /// Run this home's commands as `uid`:`gid` (`setpriv`), after giving
    /// the home to that user. Set before the first command.
    pub fn as_user(mut self, uid: u32, gid: u32) -> Self {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(self.dir.path())
            .status()
            .expect("run chown");
        assert!(status.success(), "chown the test home");
        self.user = Some((uid, gid));
        self
    }

    /// Run this home's commands, and so its daemon, in the network
    /// namespace `ns` (`ip netns exec`). Set before the first command.
    pub fn in_netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_string());
        self
    }

    /// The program and leading arguments of a `banger` command.
    fn program(&self) -> (PathBuf, Vec<std::ffi::OsString>) {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns.as_str()].map(Into::into));
        }
        if let Some((uid, gid)) = self.user {
            argv.extend(
                [
                    "setpriv".to_string(),
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".into(),
                ]
                .map(Into::into),
            );
        }
        argv.push(self.bins.join("banger").into());
        let program = PathBuf::from(argv.remove(0));
        (program, argv)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `banger ARGS` with this home's environment.
    pub fn banger(&self) -> assert_cmd::Command {
        let (program, lead) = self.program();
        let mut cmd = assert_cmd::Command::new(program);
        self.env(cmd.env_clear()).args(lead);
        cmd
    }

    /// A std Command for `banger`, for tests that need to spawn and kill.
    pub fn banger_std(&self) -> Command {
        let (program, lead) = self.program();
        let mut cmd = Command::new(program);
        cmd.env_clear().envs(self.env_vars()).args(lead);
        // A shell that ran the tests in the background left SIGINT
        // ignored, and exec keeps that: give banger the disposition of a
        // terminal's foreground job, so a test's Ctrl-C reaches it as a
        // user's would.
        // SAFETY: only signal(2), which is async-signal-safe, between fork
        // and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                use nix::sys::signal::{SigHandler, Signal, signal};
                signal(Signal::SIGINT, SigHandler::SigDfl)
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// The whole environment of this home's commands: nothing of the
    /// caller's but `PATH` and the agent to boot with.
    fn env_vars(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut vars = vec![
            ("PATH", std::env::var_os("PATH").unwrap_or_default()),
            ("HOME", self.dir.path().into()),
            ("BANGER_HOME", self.data_dir().into()),
            ("BANGER_CONFIG", self.dir.path().join("config.toml").into()),
        ];
        if let Some(agent) = std::env::var_os("BANGER_AGENT_BIN") {
            vars.push(("BANGER_AGENT_BIN", agent));
        }
        vars.extend(self.extra_env.iter().cloned());
        vars
    }

    fn env<'a>(&self, cmd: &'a mut assert_cmd::Command) -> &'a mut assert_cmd::Command {
        cmd.envs(self.env_vars())
    }

    /// Run `banger ARGS`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.banger().args(args).output().expect("run banger");
        assert!(
            out.status.success(),
            "banger {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `banger ARGS` with stdin closed, whatever its outcome: (exit
    /// code, or -1 when killed by a signal; stdout; stderr).
    pub fn outcome(&self, args: &[&str]) -> (i32, String, String) {
        let out = self
            .banger_std()
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run banger");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// SIGKILL this home's daemon (which must be running), as a crash
    /// would; returns its pid.
    pub fn kill_daemon(&self) -> i64 {
        let pid = self.json(&["daemon", "status", "--json"])["pid"]
            .as_i64()
            .expect("daemon pid");
        kill9(pid);
        pid
    }

    /// The socket of this home's daemon (started if need be).
    pub fn socket(&self) -> PathBuf {
        PathBuf::from(
            self.json(&["daemon", "status", "--json"])["socket"]
                .as_str()
                .expect("daemon socket"),
        )
    }

    /// One raw request to this home's daemon: (status, JSON body).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        http::request(&self.socket(), method, path, body)
    }

    /// Run `banger ARGS --json`-style commands and parse stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("banger {args:?}: not JSON ({e}): {out}"))
    }

    /// What the daemon recorded of `vm`'s running VMM (`handles.json` in
    /// its directory); None while it has none.
    pub fn vm_handles(&self, vm: &str) -> Option<serde_json::Value> {
        let shown = self.json(&["vm", "show", vm, "--json"]);
        let dir = Path::new(shown["dir"].as_str()?).join("handles.json");
        serde_json::from_slice(&std::fs::read(dir).ok()?).ok()
    }

    /// The pid of `vm`'s VMM; panics when it has none.
    pub fn vmm_pid(&self, vm: &str) -> i64 {
        self.vm_handles(vm)
            .and_then(|h| h["pid"].as_i64())
            .unwrap_or_else(|| panic!("vm {vm} has no VMM"))
    }

    /// Run `banger ARGS`, asserting failure; returns stderr. Checks the
    /// error is one line, as every banger error must be.
    pub fn fails(&self, args: &[&str]) -> String {
        self.fails_cmd(self.banger(), args)
    }

    /// [`Self::fails`] with one variable of the environment changed.
    pub fn fails_with_env(
        &self,
        args: &[&str],
        var: &str,
        value: impl AsRef<std::ffi::OsStr>,
    ) -> String {
        let mut cmd = self.banger();
        cmd.env(var, value);
        self.fails_cmd(cmd, args)
    }

    fn fails_cmd(&self, mut cmd: assert_cmd::Command, args: &[&str]) -> String {
        let out: Output = cmd.args(args).output().expect("run banger");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "banger {args:?} should fail but succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Progress lines may precede it on a non-TTY stderr; the error itself
        // is the last line, alone, prefixed `banger: `.
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("banger: "))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "banger {args:?}: expected exactly one error line, got: {stderr}"
        );
        assert_eq!(
            stderr.trim_end().lines().last(),
            Some(errors[0]),
            "banger {args:?}: the error must be the last line: {stderr}"
        );
        errors[0].to_string()
    }

    /// Every file under the data dir, relative, sorted: to prove a failed
    /// operation left nothing behind.
    pub fn data_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.data_dir(), &self.data_dir(), &mut out);
        out.retain(|p| {
            !(p.starts_with("run/")
                || p.starts_with("state.db")
                || p.starts_with("bangerd.log")
                || p == "bangerd.lock"
                || p == "run"
                // The unpacked tree of a finished import, which the daemon
                // removes in the background (banger_image::Scratch).
                || p.contains(".staging-"))
        });
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
        if p.is_dir() && !p.is_symlink() {
            walk(root, &p, out);
        } else {
            out.push(rel);
        }
    }
}

impl Default for TestHome {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        // Kill this home's VMs (a failed test must not leave VMMs eating the
        // CPU of the tests after it), then stop its daemon. Best effort: the
        // daemon may never have started.
        let running = self
            .banger_std()
            .args(["daemon", "status"])
            .output()
            .is_ok_and(|o| o.status.success());
        if running {
            if let Ok(out) = self.banger_std().args(["vm", "ls", "--json"]).output() {
                let vms: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                for vm in vms.as_array().into_iter().flatten() {
                    if vm["desired_state"] == "running"
                        && let Some(id) = vm["id"].as_str()
                    {
                        let _ = self.banger_std().args(["vm", "kill", id]).output();
                    }
                }
            }
            let _ = self.banger_std().args(["daemon", "stop"]).output();
        }
        // BANGER_TEST_KEEP=1 keeps the home (logs, console, disks) for a
        // post-mortem of a failed test.
        if std::env::var("BANGER_TEST_KEEP").as_deref() == Ok("1") {
            let dir = std::mem::replace(&mut self.dir, tempfile::TempDir::new().expect("tempdir"));
            eprintln!("kept test home {}", dir.keep().display());
        }
    }
}

/// Write a small root filesystem tree: an /etc, a /root with dotfiles, an
/// executable, a symlink and a hardlink. Enough to check what an import keeps.
pub fn tiny_rootfs(dir: &Path) {
    let w = |rel: &str, body: &str, mode: u32| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    w(
        "etc/os-release",
        "ID=tiny\nPRETTY_NAME=\"tiny test rootfs\"\n",
        0o644,
    );
    w("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644);
    w("root/.profile", "export PS1='# '\n", 0o644);
    w("root/notes/hello.txt", "hello from the work seed\n", 0o600);
    w("bin/tool", "#!/bin/sh\necho tool\n", 0o755);
    std::fs::set_permissions(dir.join("root"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod root");
    std::os::unix::fs::symlink("tool", dir.join("bin/tool-link")).expect("symlink");
    std::fs::hard_link(dir.join("bin/tool"), dir.join("bin/tool-hard")).expect("hardlink");
    for d in ["proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
}

/// A file that looks enough like an x86 bzImage for `kernel import`: the
/// boot-protocol magic at 0x202 and a version string the header points to.
pub fn fake_bzimage(path: &Path, release: &str) {
    let mut buf = vec![0u8; 0x4000];
    buf[0x1FE] = 0x55;
    buf[0x1FF] = 0xAA;
    buf[0x202..0x206].copy_from_slice(b"HdrS");
    buf[0x206] = 0x0F; // protocol 2.15
    buf[0x207] = 0x02;
    let version_at = 0x1000usize;
    let ptr = u16::try_from(version_at - 0x200).expect("fits");
    buf[0x20E..0x210].copy_from_slice(&ptr.to_le_bytes());
    let text = format!("{release} (test@banger) #1 SMP\0");
    buf[version_at..version_at + text.len()].copy_from_slice(text.as_bytes());
    std::fs::write(path, buf).expect("write fake bzImage");
}

/// A large fixture named by an environment variable (`scripts/test.sh` sets
/// them all). Unset, the test cannot run: see [`skip`].
pub fn fixture(var: &str, how: &str) -> Option<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.exists(), "{var}={} does not exist; {how}", p.display());
            Some(p)
        }
        None => {
            skip(&format!("{var} is not set: {how}"));
            None
        }
    }
}

/// Debian's kernel package unpacked: `vmlinuz` and `modules/<release>/`
/// (`BANGER_TEST_KERNEL_DIR`), for the VMM and initramfs crates' own boots.
pub fn kernel_dir() -> Option<PathBuf> {
    let d = fixture(
        "BANGER_TEST_KERNEL_DIR",
        "run scripts/test.sh, which unpacks Debian's cloud kernel package into .cache/kernel",
    )?;
    assert!(
        d.join("vmlinuz").exists(),
        "BANGER_TEST_KERNEL_DIR={} has no vmlinuz",
        d.display()
    );
    Some(d)
}

/// banger's own guest kernel (`BANGER_TEST_BUILT_KERNEL`): the directory
/// `scripts/build-kernel.sh` prints.
pub fn built_kernel() -> Option<PathBuf> {
    fixture(
        "BANGER_TEST_BUILT_KERNEL",
        "run scripts/build-kernel.sh and point it at the directory it prints",
    )
}

/// The Debian kernel package fixture.
pub fn kernel_deb() -> Option<PathBuf> {
    fixture(
        "BANGER_TEST_KERNEL_DEB",
        "run scripts/test.sh, or set it to the output of scripts/fetch-kernel.sh .cache",
    )
}

/// The mmdebstrap Debian bookworm tarball fixture.
pub fn debian_rootfs_tar() -> Option<PathBuf> {
    fixture(
        "BANGER_TEST_DEBIAN_TAR",
        "run scripts/test.sh, or set it to the output of scripts/fetch-debian-rootfs.sh .cache",
    )
}

/// The static guest agent (`scripts/build-agent.sh`).
pub fn agent_bin() -> Option<PathBuf> {
    fixture(
        "BANGER_AGENT_BIN",
        "run scripts/test.sh, or set it to the output of scripts/build-agent.sh",
    )
}

/// The hostile guest agent of the host-trust test (a static build of
/// `banger-agent`'s example `hostile_agent`).
pub fn hostile_agent_bin() -> Option<PathBuf> {
    fixture(
        "BANGER_HOSTILE_AGENT_BIN",
        "run scripts/test.sh, or set it to the output of scripts/build-hostile-agent.sh",
    )
}

/// A busybox root filesystem without an init: the agent stays PID 1.
pub fn busybox_rootfs(dir: &Path) {
    let busybox = require_tool("busybox", "busybox-static");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::fs::copy(&busybox, bin.join("busybox")).expect("copy busybox");
    for applet in [
        "sh", "cat", "echo", "uname", "ls", "tty", "sleep", "id", "true", "false", "kill", "mount",
        "hostname", "sync", "wc", "head", "env", "pwd", "stat", "date", "rm", "mkdir", "ps",
        "poweroff",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    for d in ["root", "etc", "proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::write(
        dir.join("etc/os-release"),
        "ID=busybox\nPRETTY_NAME=\"busybox test image\"\n",
    )
    .expect("os-release");
}

/// Whether `BANGER_ALLOW_SKIP` (test names separated by commas or spaces;
/// `name*` matches every name that starts with `name`) names `test`.
fn skip_allowed(allow: &str, test: &str) -> bool {
    allow
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => test.starts_with(prefix),
            None => test == p,
        })
}

/// The running test cannot run on this host, for `reason`. When its name
/// is in `BANGER_ALLOW_SKIP` it says `skipped:` on stderr and in the file
/// named by `BANGER_SKIP_LOG` (which `scripts/test.sh` prints after the run),
/// and the caller returns; otherwise the test fails here, so nothing passes
/// by skipping unless someone allowed that test by name.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    let allow = std::env::var("BANGER_ALLOW_SKIP").unwrap_or_default();
    assert!(
        skip_allowed(&allow, &test),
        "{test} cannot run here: {reason} (to let it skip, name it in BANGER_ALLOW_SKIP)"
    );
    eprintln!("skipped: {test}: {reason}");
    if let Some(log) = std::env::var_os("BANGER_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "skipped: {test}: {reason}");
        }
    }
}

/// A home ready to boot: Debian's kernel imported and a busybox image named
/// `busybox`. None when the fixtures are absent and skipping is allowed.
pub fn boot_home() -> Option<TestHome> {
    boot_home_with(TestHome::new())
}

/// [`boot_home`] on a home made by the caller (a config, a namespace).
pub fn boot_home_with(home: TestHome) -> Option<TestHome> {
    let deb = kernel_deb()?;
    agent_bin()?;
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    home.ok(&[
        "kernel",
        "import",
        "--deb",
        deb.to_str().expect("utf-8 path"),
    ]);
    let root = home.path().join("busybox");
    busybox_rootfs(&root);
    home.ok(&[
        "image",
        "import",
        root.to_str().expect("utf-8 path"),
        "--name",
        "busybox",
    ]);
    Some(home)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_allowed_by_name_or_prefix_only() {
        let allow = "firecracker_vm_lifecycle, boot_*";
        assert!(skip_allowed(allow, "firecracker_vm_lifecycle"));
        assert!(skip_allowed(allow, "boot_on_kvm"));
        assert!(!skip_allowed(allow, "firecracker_vm"));
        assert!(!skip_allowed("1", "anything"), "the old catch-all is gone");
        assert!(!skip_allowed("", "anything"));
    }
}

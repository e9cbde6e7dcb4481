//! The "remote host" of the remote suite: a network namespace running the
//! real OpenSSH server for a user made for the test, whose daemon (started
//! by `banger system dial-stdio` on first use, as in real life) boots VMs
//! under QEMU in that namespace; and the "laptop": a second namespace,
//! joined by a veth pair, where the client runs. Nothing here touches the
//! host's own network, and nothing listens but sshd.
//!
//! sshd listens on four ports, each giving the session another PATH:
//! 22 this build's banger, 2222 none at all, 2223 an older banger without
//! `system dial-stdio`, 2224 one whose daemon speaks an older API. The
//! client's ssh config pins the server's host key (`known_hosts`), and a
//! second host entry (`changed`) pins another key, as after a reinstall.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, bin_dir, require_tool};

pub const LAPTOP_IP: &str = "10.231.0.1";
pub const REMOTE_IP: &str = "10.231.0.2";
/// A second address of the remote host: the same sshd, reached by a host
/// entry that pins another key (`changed`), and not sharing the first
/// one's ssh connection (which would skip the key check).
pub const REMOTE_IP2: &str = "10.231.0.3";
/// Ports of sshd, by what the remote session finds in its PATH.
pub const NO_BANGER_PORT: u16 = 2222;
pub const OLD_BANGER_PORT: u16 = 2223;
pub const OLD_API_PORT: u16 = 2224;

/// The remote host and the laptop's view of it.
pub struct RemoteHost {
    pub laptop: NetNs,
    pub remote: NetNs,
    pub user: String,
    pub uid: u32,
    /// Everything of the test: keys, configs, the remote user's home.
    pub dir: PathBuf,
    sshd: Option<Child>,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a setup command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "banger-remote-test",
            "-f",
        ])
        .arg(path));
}

/// The public key in `path.pub`, type and data only.
fn public(path: &Path) -> String {
    let text = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl RemoteHost {
    pub fn new() -> RemoteHost {
        let sshd = require_tool("sshd", "openssh-server");
        require_tool("ssh", "openssh-client");
        require_tool("ssh-keygen", "openssh-client");
        require_tool("useradd", "passwd");
        let agent = std::env::var_os("BANGER_AGENT_BIN").expect("BANGER_AGENT_BIN");
        let n = std::process::id();
        let dir = PathBuf::from(format!("/tmp/bgr-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();

        // The remote user, with a home the daemon keeps its data in.
        let user = format!("bangerr{n}");
        let home = dir.join("home");
        run(Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--create-home",
                "--shell",
                "/bin/sh",
            ])
            // `*`: no password, but not locked (sshd refuses locked users).
            .args(["--password", "*", "--home-dir"])
            .arg(&home)
            .arg(&user));
        let uid: u32 = run(Command::new("id").args(["-u", &user]))
            .trim()
            .parse()
            .unwrap();
        let conf = home.join(".config/banger");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("config.toml"),
            "[network]\nmode = \"none\"\n\n[vm]\nwarm_templates = false\n",
        )
        .unwrap();
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:{user}"))
            .arg(&home));

        // Two stand-ins for other banger versions.
        for (sub, script) in [("old", OLD_BANGER), ("oldapi", OLD_API)] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("banger"), script).unwrap();
            std::fs::set_permissions(d.join("banger"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }

        // Keys: the server's, the one the client pins after a
        // "reinstall", and the client's.
        for k in ["host_key", "other_host_key", "client_key"] {
            keygen(&dir.join(k));
        }
        std::fs::write(
            dir.join("authorized_keys"),
            format!("{}\n", public(&dir.join("client_key"))),
        )
        .unwrap();
        std::fs::set_permissions(
            dir.join("authorized_keys"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::write(
            dir.join("known_hosts"),
            format!("remote {}\n", public(&dir.join("host_key"))),
        )
        .unwrap();
        std::fs::write(
            dir.join("known_hosts_changed"),
            format!("remote {}\n", public(&dir.join("other_host_key"))),
        )
        .unwrap();

        let bin = bin_dir();
        let path_of = |first: &Path| format!("{}:/usr/bin:/bin", first.display());
        let agent = Path::new(&agent).display().to_string();
        let d = dir.display();
        let sshd_config = format!(
            "ListenAddress {REMOTE_IP}:22\n\
             ListenAddress {REMOTE_IP2}:22\n\
             ListenAddress {REMOTE_IP}:{NO_BANGER_PORT}\n\
             ListenAddress {REMOTE_IP}:{OLD_BANGER_PORT}\n\
             ListenAddress {REMOTE_IP}:{OLD_API_PORT}\n\
             HostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PidFile none\nUsePAM no\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             AllowUsers {user}\n\
             Match LocalPort 22\n  SetEnv PATH={} BANGER_AGENT_BIN={agent}\n\
             Match LocalPort {NO_BANGER_PORT}\n  SetEnv PATH=/usr/bin:/bin\n\
             Match LocalPort {OLD_BANGER_PORT}\n  SetEnv PATH={}\n\
             Match LocalPort {OLD_API_PORT}\n  SetEnv PATH={}\n",
            path_of(&bin),
            path_of(&dir.join("old")),
            path_of(&dir.join("oldapi")),
        );
        std::fs::write(dir.join("sshd_config"), sshd_config).unwrap();
        let ssh_config = format!(
            "Host changed\n  HostName {REMOTE_IP2}\n  UserKnownHostsFile {d}/known_hosts_changed\n\n\
             Host *\n  HostName {REMOTE_IP}\n  User {user}\n  IdentityFile {d}/client_key\n\
             \x20 IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n\
             \x20 GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  HostKeyAlias remote\n"
        );
        std::fs::write(dir.join("ssh_config"), ssh_config).unwrap();

        let laptop = NetNs::new("laptop");
        let remote = NetNs::new("remote");
        laptop.veth("bgrl0", &remote, "bgrr0");
        laptop.ip(&["addr", "add", &format!("{LAPTOP_IP}/24"), "dev", "bgrl0"]);
        remote.ip(&["addr", "add", &format!("{REMOTE_IP}/24"), "dev", "bgrr0"]);
        remote.ip(&["addr", "add", &format!("{REMOTE_IP2}/24"), "dev", "bgrr0"]);

        // sshd's privilege separation directory (the package's service
        // makes it at start; we start sshd ourselves).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = remote
            .command(sshd.to_str().unwrap())
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut host = RemoteHost {
            laptop,
            remote,
            user,
            uid,
            dir,
            sshd: Some(child),
        };
        host.wait_listening();
        host
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.remote.command("ss").args(["-ltnH"]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            if [22, NO_BANGER_PORT, OLD_BANGER_PORT, OLD_API_PORT]
                .iter()
                .all(|p| text.contains(&format!("{REMOTE_IP}:{p} ")))
                && text.contains(&format!("{REMOTE_IP2}:22 "))
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.sshd.as_mut().map(Child::try_wait) {
                panic!(
                    "sshd exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "sshd never listened: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `BANGER_SSH_COMMAND` for the laptop: the user's own OpenSSH with
    /// this test's config.
    pub fn ssh_command(&self) -> String {
        format!("ssh -F {}", self.dir.join("ssh_config").display())
    }

    /// Where the laptop's banger keeps its ssh control sockets.
    pub fn xdg(&self) -> PathBuf {
        let d = self.dir.join("xdg");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    /// A laptop home whose every command goes to the remote host.
    pub fn laptop_home(&self) -> TestHome {
        TestHome::new()
            .in_netns(self.laptop.name())
            .with_env("BANGER_SSH_COMMAND", self.ssh_command())
            .with_env("BANGER_HOST", "ssh://remote")
            .with_env("XDG_RUNTIME_DIR", self.xdg())
    }

    /// The control sockets of the shared ssh connections now open.
    pub fn control_sockets(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    walk(&p, out);
                } else if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.join("xdg"), &mut out);
        out
    }

    /// The pid of the shared ssh connection (the master) to the remote's
    /// port 22, asked of the master itself.
    pub fn master_pid(&self) -> u32 {
        let dirs: Vec<PathBuf> = self
            .control_sockets()
            .iter()
            .filter_map(|s| s.parent().map(Path::to_path_buf))
            .collect();
        let dir = dirs.first().expect("a shared ssh connection");
        let out = self
            .laptop
            .command("ssh")
            .arg("-F")
            .arg(self.dir.join("ssh_config"))
            .arg("-o")
            .arg(format!("ControlPath={}/%C", dir.display()))
            .args(["-O", "check", "remote"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        text.split("pid=")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no master: {text}"))
    }

    /// Cut the ssh connection, as a network drop would: the master dies.
    pub fn cut(&self) {
        banger_testkit::kill9(self.master_pid().into());
    }

    /// Processes of the remote user (daemon, QEMU, dial-stdio, sessions).
    pub fn user_processes(&self) -> Vec<(u32, String)> {
        processes(|uid, _| uid == self.uid)
    }

    /// Whether `port` listens on `ns`: what the suite checks to say no
    /// port but sshd's was opened.
    pub fn listening(ns: &NetNs) -> Vec<String> {
        let out = ns.command("ss").args(["-ltnH"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
            .collect()
    }
}

/// `(pid, cmdline)` of every process whose owner and command line pass
/// `keep`.
fn processes(keep: impl Fn(u32, &str) -> bool) -> Vec<(u32, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(meta), Ok(cmd)) = (e.metadata(), std::fs::read(e.path().join("cmdline"))) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        // A zombie (no command line) is gone but for its parent's wait.
        if !cmd.is_empty() && keep(meta.uid(), &cmd) {
            out.push((pid, cmd));
        }
    }
    out
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        // The shared connections first: their sessions end with them.
        for sock in self.control_sockets() {
            let _ = self
                .laptop
                .command("ssh")
                .arg("-F")
                .arg(self.dir.join("ssh_config"))
                .arg("-S")
                .arg(&sock)
                .args(["-O", "exit", "remote"])
                .output();
        }
        if let Some(mut sshd) = self.sshd.take() {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        // Whatever of the test user's still runs (a daemon a failed test
        // did not stop, its QEMU) and sshd's per-connection monitors.
        let monitor = format!("sshd: {}", self.user);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = processes(|uid, cmd| uid == self.uid || cmd.starts_with(&monitor));
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for (pid, _) in left {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("userdel").arg(&self.user).output();
        if std::env::var("BANGER_TEST_KEEP").as_deref() != Ok("1") {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A banger from before remote hosts: no `system dial-stdio`.
const OLD_BANGER: &str = "#!/bin/sh
# Stands in for a banger older than remote hosts: clap's answer to an
# unknown subcommand, and its exit code.
echo \"banger: unrecognized subcommand '$2' (see --help)\" >&2
exit 2
";

/// A banger whose daemon speaks an older API version: `dial-stdio`
/// answers `GET /v1/version` as such a daemon would, then hangs up.
const OLD_API: &str = "#!/bin/sh
[ \"$1 $2\" = \"system dial-stdio\" ] || exit 2
cr=$(printf '\\r')
while IFS= read -r line; do
  [ \"$line\" = \"$cr\" ] && break
  [ -z \"$line\" ] && break
done
body='{\"api_version\":0,\"version\":\"0.0.1\",\"pid\":1,\"socket\":\"/run/old.sock\",\"data_dir\":\"/old\",\"started_at\":\"2020-01-01T00:00:00Z\"}'
printf 'HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %s\\r\\nConnection: close\\r\\n\\r\\n%s' \"${#body}\" \"$body\"
";

//! `banger vm ssh`, `vm ssh-config` and `vm proxy`: the real OpenSSH client
//! into a VM with banger's managed key, strict host key checking against
//! banger's own known_hosts (filled by the daemon at `vm create`, never
//! trust-on-first-use; each key is listed under `<name>.vm`, the guest IP
//! and a per-VM alias). With host networking on, `vm ssh` goes over the
//! bridge to the guest IP; without it (or with `--via-agent`) it reaches
//! the guest's sshd through the agent: the ProxyCommand is
//! `banger vm proxy VM 22`, which splices stdio to a guest TCP port over
//! the daemon's `tcp` route. `vm ssh-config` always prints the agent way,
//! which works from anywhere on the host.
//!
//! With the daemon on another host (`--host ssh://...`), the remote host
//! is the jump: the ProxyCommand is `banger --host ssh://... vm proxy`,
//! which goes over the shared ssh connection to that daemon's agent
//! route. The key and the VM's pinned host key come from that daemon
//! (`GET /v1/vms/{ref}/ssh`) into `<data_dir>/remotes/<host>/` here, so
//! the host key is still checked strictly, never trusted on first use.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use banger_api::TcpQuery;
use banger_api::VmRecord;
use banger_api::endpoints::{Config, VmsList, VmsShow, VmsSsh, VmsStats, VmsTcp};
use banger_config::Layout;
use banger_config::paths::ssh_host_alias;
use clap::Args;
use hyper_util::rt::TokioIo;

use crate::client::{self, Client};

/// Where Debian, Alpine and most images keep the daemon; its absence means
/// the image has no sshd and `vm shell` is the way in.
const SSHD: &str = "/usr/sbin/sshd";

#[derive(Args, Debug)]
pub struct SshArgs {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    reference: String,
    /// Forward the local ssh-agent into the VM
    #[arg(short = 'A')]
    forward_agent: bool,
    /// Go through the guest agent even when the VM has a NIC on the bridge
    #[arg(long)]
    via_agent: bool,
    /// The remote command (joined by ssh and run by the guest's shell)
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SshConfigArgs {
    /// One VM (default: every VM)
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    reference: String,
    /// The guest TCP port
    port: u16,
}

/// What every way of calling ssh shares for one VM.
struct Target {
    vm: VmRecord,
    host: String,
    alias: String,
    key: PathBuf,
    known_hosts: PathBuf,
    proxy: String,
    /// Host networking is on: the guest IP is reachable over the bridge.
    bridged: bool,
}

/// Where OpenSSH finds the key and the pinned host keys for the VMs of a
/// daemon.
struct Material {
    key: PathBuf,
    known_hosts: PathBuf,
}

/// This host's daemon's own files, or, for a daemon on another host, a
/// copy of what it says for `vms` in `<data_dir>/remotes/<host>/`.
async fn material(c: &Client, vms: &[VmRecord]) -> Result<Material> {
    let layout = client::layout()?;
    let Some(remote) = c.remote() else {
        let key = layout.ssh_key();
        if !key.exists() {
            bail!(
                "no banger ssh key at {}; VMs created by this banger version get one at `vm create`",
                key.display()
            );
        }
        return Ok(Material {
            key,
            known_hosts: layout.known_hosts(),
        });
    };
    let dir = remote_dir(&layout, remote);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let m = Material {
        key: dir.join("id_ed25519"),
        known_hosts: dir.join("known_hosts"),
    };
    let mut lines: Vec<String> = std::fs::read_to_string(&m.known_hosts)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let mut key = None;
    for vm in vms {
        let access = c.call::<VmsSsh>(&[&vm.id], &()).await?;
        // The daemon's lines for this VM replace whatever was here for it.
        lines.retain(|l| {
            !l.split_whitespace()
                .next()
                .is_some_and(|h| h.split(',').any(|n| n == access.host_key_alias))
        });
        lines.extend(access.known_hosts);
        key = Some(access.private_key);
    }
    if let Some(key) = key {
        write_private(&m.key, key.as_bytes())?;
    }
    let mut text = lines.join("\n");
    text.push('\n');
    write_private(&m.known_hosts, text.as_bytes())?;
    Ok(m)
}

/// `<data_dir>/remotes/<user@host_port>`: one directory per remote host.
fn remote_dir(layout: &Layout, remote: &client::ssh::SshTarget) -> PathBuf {
    let name: String = remote
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    layout.data_dir.join("remotes").join(name)
}

/// Write `path` whole (beside it, then renamed), readable by this user only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

async fn target(reference: &str) -> Result<(Client, Target)> {
    let c = client::daemon().await?;
    let vm = c.call::<VmsShow>(&[reference], &()).await?;
    let network = c
        .call::<Config>(&[], &())
        .await
        .map(|r| r.config.network)
        .ok();
    let domain = network
        .as_ref()
        .map_or_else(|| "vm".to_string(), |n| n.domain.clone());
    let mode = network.map_or_else(|| "none".to_string(), |n| n.mode);
    // Networking on (or `auto`): the VM has a NIC when its tap exists,
    // which its stats say. The bridge of another host is out of reach.
    let bridged = mode != "none"
        && c.remote().is_none()
        && c.call::<VmsStats>(&[&vm.id], &())
            .await
            .is_ok_and(|s| s.net.is_some());
    let m = material(&c, std::slice::from_ref(&vm)).await?;
    let mut t = target_of(&m, vm, &domain)?;
    t.bridged = bridged;
    Ok((c, t))
}

fn target_of(m: &Material, vm: VmRecord, domain: &str) -> Result<Target> {
    Ok(Target {
        host: format!("{}.{domain}", vm.name),
        alias: ssh_host_alias(&vm.id),
        proxy: proxy_command(&vm.id)?,
        key: m.key.clone(),
        known_hosts: m.known_hosts.clone(),
        vm,
        bridged: false,
    })
}

/// `banger vm proxy ID %p`, with the banger home and config this CLI uses
/// spelled out (and the remote host and the ssh command, for a daemon on
/// another host), so a plain `ssh` from another environment reaches the
/// same daemon.
fn proxy_command(id: &str) -> Result<String> {
    let exe = std::env::current_exe().context("locate the banger executable")?;
    let mut words: Vec<String> = Vec::new();
    let pinned: Vec<(&str, OsString)> =
        ["BANGER_HOME", "BANGER_CONFIG", client::ssh::SSH_COMMAND_VAR]
            .into_iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (k, v)))
            .collect();
    if !pinned.is_empty() {
        words.push("env".into());
        for (k, v) in pinned {
            words.push(format!("{k}={}", v.to_string_lossy()));
        }
    }
    words.push(exe.display().to_string());
    if let client::Host::Ssh(t) = client::host()? {
        words.extend(["--host".into(), t.url()]);
    }
    words.extend(["vm".into(), "proxy".into(), id.into(), "%p".into()]);
    shlex::try_join(words.iter().map(String::as_str))
        .map_err(|e| anyhow!("cannot quote the proxy command: {e}"))
}

impl Target {
    /// The `-o` options through the agent, in the order `vm ssh` passes
    /// them.
    fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("IdentitiesOnly", "yes".into()),
            ("BatchMode", "yes".into()),
            ("StrictHostKeyChecking", "yes".into()),
            ("UserKnownHostsFile", self.known_hosts.display().to_string()),
            ("HostKeyAlias", self.alias.clone()),
            ("ProxyCommand", self.proxy.clone()),
        ]
    }

    /// Over the bridge: straight to the guest IP, whose known_hosts entry
    /// holds the same pinned key.
    fn bridge_options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("IdentitiesOnly", "yes".into()),
            ("BatchMode", "yes".into()),
            ("StrictHostKeyChecking", "yes".into()),
            ("UserKnownHostsFile", self.known_hosts.display().to_string()),
        ]
    }
}

pub async fn ssh(a: SshArgs) -> Result<ExitCode> {
    let (c, t) = target(&a.reference).await?;
    // sshd present? One quick exec; it also fails clearly when the VM is
    // not running.
    let probe = banger_proto::ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), format!("test -x {SSHD}")],
        env: vec![],
        cwd: None,
        user: None,
        tty: None,
        stdin: false,
    };
    let code = crate::exec::run(&c, &t.vm.id, probe, false, false, async { Ok(()) }).await?;
    if code != 0 {
        bail!(
            "vm {} has no {SSHD} (its image ships no OpenSSH server); use `banger vm shell {}`",
            t.vm.name,
            t.vm.name
        );
    }
    wait_for_sshd(&c, &t.vm).await?;
    let bridge = t.bridged && !a.via_agent;
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-i").arg(&t.key);
    let (options, host) = if bridge {
        (t.bridge_options(), t.vm.guest_ip.clone())
    } else {
        (t.options(), t.host.clone())
    };
    for (k, v) in options {
        cmd.arg("-o").arg(format!("{k}={v}"));
    }
    if a.forward_agent {
        cmd.arg("-A");
    }
    cmd.args(["-l", "root", "--", &host]);
    if !a.command.is_empty() {
        // ssh hands the remote shell one string: quote each word so the
        // guest runs this argv, as `vm exec -- CMD...` does.
        cmd.arg(remote_command(&a.command)?);
    }
    // exec, not spawn: the TTY, signals and the exit status are ssh's own.
    let err = cmd.exec();
    Err(anyhow!("cannot run ssh (install openssh-client): {err}"))
}

/// The words of a command as one string the remote shell splits back into
/// exactly these words.
fn remote_command(words: &[String]) -> Result<String> {
    shlex::try_join(words.iter().map(String::as_str))
        .map_err(|e| anyhow!("cannot pass {words:?} to ssh: {e}"))
}

/// How long `vm ssh` waits for the guest's sshd to take connections (a
/// systemd guest that just started may still be starting it).
const SSHD_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// Waits until the guest's sshd accepts a connection on port 22, saying
/// so once while it waits, up to [`SSHD_WAIT`].
async fn wait_for_sshd(c: &Client, vm: &VmRecord) -> Result<()> {
    let deadline = std::time::Instant::now() + SSHD_WAIT;
    let mut said = false;
    loop {
        match guest_tcp(c, &vm.id, 22).await {
            Ok(conn) => {
                drop(conn);
                if said {
                    eprintln!("banger: sshd in {} is up", vm.name);
                }
                return Ok(());
            }
            Err(e) if std::time::Instant::now() >= deadline => {
                bail!(
                    "sshd in vm {} did not accept connections within {}s: {e}",
                    vm.name,
                    SSHD_WAIT.as_secs()
                );
            }
            Err(_) => {
                if !said {
                    eprintln!("banger: waiting for sshd in {} to start...", vm.name);
                    said = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
}

pub async fn ssh_config(a: SshConfigArgs) -> Result<ExitCode> {
    let c = client::daemon().await?;
    let vms: Vec<VmRecord> = match &a.reference {
        Some(r) => vec![c.call::<VmsShow>(&[r], &()).await?],
        None => c.call::<VmsList>(&[], &()).await?,
    };
    let config: serde_json::Value = c
        .call::<Config>(&[], &())
        .await
        .ok()
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or_default();
    let domain = config["config"]["network"]["domain"]
        .as_str()
        .unwrap_or("vm");
    let m = material(&c, &vms).await?;
    let mut out = String::new();
    for vm in vms {
        let t = target_of(&m, vm, domain)?;
        out.push_str(&config_block(&t));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn config_block(t: &Target) -> String {
    let mut s = format!(
        "Host {}\n  HostName {}\n  User root\n  IdentityFile {}\n",
        t.host,
        t.vm.guest_ip,
        quote_path(&t.key)
    );
    for (k, v) in t.options() {
        let v = if k == "UserKnownHostsFile" {
            quote_path(&t.known_hosts)
        } else {
            v
        };
        s.push_str(&format!("  {k} {v}\n"));
    }
    s.push('\n');
    s
}

/// ssh_config takes double quotes around a path with spaces.
fn quote_path(p: &Path) -> String {
    let s = p.display().to_string();
    if s.contains(' ') {
        format!("\"{s}\"")
    } else {
        s
    }
}

/// Splice stdin/stdout to `PORT` inside the guest until either side ends.
pub async fn proxy(a: ProxyArgs) -> Result<ExitCode> {
    let c = client::daemon().await?;
    let upgraded = guest_tcp(&c, &a.reference, a.port).await?;
    let (mut rd, mut wr) = tokio::io::split(upgraded);
    let up = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let r = tokio::io::copy(&mut stdin, &mut wr).await;
        // Half-close: the guest side sees EOF, the reply still flows.
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
        r
    });
    let mut stdout = tokio::io::stdout();
    tokio::io::copy(&mut rd, &mut stdout)
        .await
        .context("read from the guest")?;
    tokio::io::AsyncWriteExt::flush(&mut stdout).await?;
    up.abort();
    Ok(ExitCode::SUCCESS)
}

/// A TCP connection to `port` inside the guest, through the daemon's `tcp`
/// route (an HTTP upgrade): what `vm proxy` and `vm forward` splice.
pub(crate) async fn guest_tcp(
    client: &Client,
    reference: &str,
    port: u16,
) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
    let query = TcpQuery { port, host: None };
    client.upgrade::<VmsTcp>(&[reference], &query).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_word_reaches_the_guest_as_one_word() {
        let words: Vec<String> = ["sh", "-c", "exit 7"].map(String::from).to_vec();
        let joined = remote_command(&words).unwrap();
        assert_eq!(shlex::split(&joined).unwrap(), words);
        let odd: Vec<String> = ["printf", "%s\\n", "a b", "it's", "$HOME"]
            .map(String::from)
            .to_vec();
        assert_eq!(shlex::split(&remote_command(&odd).unwrap()).unwrap(), odd);
    }
}

//! `banger system install|status|restart|uninstall`: the root helper and
//! the owner's daemon as systemd services (banger-system renders and
//! manages the units), plus what no unit owns: the host network the helper
//! made (taps, bridge, nft table), which `uninstall` asks the helper to
//! take down (the running one, else one it starts for that) before it
//! removes the services. The CLI itself links no netlink or nftables code.
//!
//! Without systemd as PID 1 there is nothing to install: `install` says
//! what to run instead (`banger-helper --owner UID` in the foreground),
//! while `status` and `uninstall` still report and remove the host network.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use banger_config::Config;
use banger_helper::{HelperClient, HostNetwork, PolicyFile, TableState};
use banger_system::{InstallSpec, Owner, SplitDns, SystemdHost};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::args::JsonFlag;
use crate::output;

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Install, enable and start the root helper and the owner's daemon (as root)
    Install(InstallArgs),
    /// Show both services, the helper, the bridge, the nft table and split DNS
    Status(JsonFlag),
    /// Restart the helper and the owner's daemon; VMs keep running (as root)
    Restart,
    /// Stop and remove the services, taps, bridge, nft table and split DNS (as root)
    Uninstall(UninstallArgs),
    /// Splice stdin/stdout to this user's daemon, starting it if need be
    /// (what `banger --host ssh://...` runs on the remote host)
    #[command(hide = true)]
    DialStdio(super::dial::DialArgs),
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The user whose daemon the helper serves (name or uid); default: the
    /// user who ran sudo
    #[arg(long)]
    owner: Option<String>,
    /// Where banger's binaries are (PREFIX/bin/bangerd, PREFIX/bin/banger-helper);
    /// default: the prefix of this banger
    #[arg(long)]
    prefix: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// Also delete the taps of VMs that still run (their network goes)
    #[arg(long)]
    force: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// The same command as words, to run on a remote host.
pub fn argv(cmd: &SystemCmd) -> Vec<String> {
    let mut v = vec!["system".to_string()];
    let json = |v: &mut Vec<String>, j: bool| {
        if j {
            v.push("--json".into());
        }
    };
    match cmd {
        SystemCmd::Install(a) => {
            v.push("install".into());
            if let Some(o) = &a.owner {
                v.extend(["--owner".into(), o.clone()]);
            }
            if let Some(p) = &a.prefix {
                v.extend(["--prefix".into(), p.display().to_string()]);
            }
            json(&mut v, a.json);
        }
        SystemCmd::Status(f) => {
            v.push("status".into());
            json(&mut v, f.json);
        }
        SystemCmd::Restart => v.push("restart".into()),
        SystemCmd::Uninstall(a) => {
            v.push("uninstall".into());
            if a.force {
                v.push("--force".into());
            }
            json(&mut v, a.json);
        }
        SystemCmd::DialStdio(_) => v.push("dial-stdio".into()),
    }
    v
}

pub async fn run(cmd: SystemCmd) -> Result<ExitCode> {
    match cmd {
        SystemCmd::Install(a) => install(a),
        SystemCmd::Status(f) => status(f.json).await,
        SystemCmd::Restart => {
            require_root("restart")?;
            let units = banger_system::restart(Path::new("/"), &SystemdHost)?;
            println!("restarted {}", units.join(" "));
            Ok(ExitCode::SUCCESS)
        }
        SystemCmd::Uninstall(a) => uninstall(a).await,
        SystemCmd::DialStdio(a) => super::dial::dial_stdio(a).await,
    }
}

fn require_root(verb: &str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        bail!(
            "system {verb} changes systemd units and host networking: run it as root (sudo banger system {verb})"
        )
    }
}

/// `--owner`, else the user who ran sudo.
fn owner(arg: Option<&str>) -> Result<(Owner, PathBuf)> {
    use nix::unistd::{Uid, User};
    let given = arg
        .map(str::to_owned)
        .or_else(|| std::env::var("SUDO_USER").ok().filter(|u| u != "root"))
        .ok_or_else(|| {
            anyhow!(
                "name the user whose daemon the helper serves: --owner USER (or run through sudo)"
            )
        })?;
    let user = match given.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(&given),
    }
    .with_context(|| format!("look up user {given}"))?
    .ok_or_else(|| anyhow!("no such user: {given}"))?;
    Ok((
        Owner {
            uid: user.uid.as_raw(),
            name: user.name,
        },
        user.dir,
    ))
}

/// The owner's own config (bridge, address, domain): the daemon it runs
/// reads that file, and the units must name the same bridge.
fn owner_config(home: &Path) -> Result<Config> {
    let path = home.join(".config/banger/config.toml");
    Ok(Config::load_from(&path)?)
}

fn install(a: InstallArgs) -> Result<ExitCode> {
    let (owner, home) = owner(a.owner.as_deref())?;
    let prefix = match a.prefix {
        Some(p) => p,
        None => std::env::current_exe()
            .context("find this banger's path")?
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow!("cannot tell banger's prefix; pass --prefix"))?,
    };
    let config = owner_config(&home)?;
    let mut spec = InstallSpec::new(owner, prefix);
    spec.bridge = config.network.bridge.clone();
    spec.bridge_addr = config.network.bridge_cidr.addr();
    spec.policy = PolicyFile {
        bridge: config.network.bridge.clone(),
        bridge_cidr: config.network.bridge_cidr,
        ..PolicyFile::default()
    };
    spec.domain = config.network.domain.clone();
    if let Some(r) = which("resolvectl") {
        spec.resolvectl = r;
    }
    // validate() first: bad input is refused the same way with or without
    // systemd, and by anyone.
    spec.validate()?;
    require_root("install")?;
    let report = banger_system::install(&spec, &SystemdHost)?;
    if a.json {
        output::json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    for u in &report.units {
        println!("wrote {}", u.display());
    }
    println!("started {}", report.started.join(" "));
    match &report.split_dns {
        SplitDns::Resolved { unit } => println!(
            "split DNS: systemd-resolved sends *.{} to {} ({unit})",
            spec.domain, spec.bridge_addr
        ),
        SplitDns::Manual { hint } => println!("split DNS: {hint}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// What the helper says of itself, as `status` and `doctor` show it.
#[derive(Debug, Serialize)]
pub struct HelperProbe {
    pub socket: PathBuf,
    pub reachable: bool,
    pub version: Option<String>,
    pub protocol: Option<u32>,
    pub owner: Option<u32>,
    /// The helper's tables against what they should hold (`matches`,
    /// `missing`, `differs: ...`, `not wanted`), when it answered.
    pub tables: Option<String>,
    /// Times it restored them since it started.
    pub repairs: Option<u64>,
    pub error: Option<String>,
}

/// One line for a helper's table state.
pub fn describe_tables(t: &TableState) -> String {
    match t {
        TableState::NotWanted => "not wanted (the network is not up)".into(),
        TableState::Matches => "match".into(),
        TableState::Missing => "missing".into(),
        TableState::Differs { detail } => format!("differ: {detail}"),
    }
}

/// Ask the helper at `socket` for its version: never fails, says why.
pub async fn probe_helper(socket: &Path) -> HelperProbe {
    match HelperClient::connect(socket).await {
        Ok((client, info)) => {
            let status = client.status().await.ok();
            HelperProbe {
                socket: socket.to_owned(),
                reachable: true,
                version: Some(info.version),
                protocol: Some(info.protocol),
                owner: Some(info.owner),
                tables: status.as_ref().map(|s| describe_tables(&s.tables)),
                repairs: status.map(|s| s.repairs),
                error: None,
            }
        }
        Err(e) => HelperProbe {
            socket: socket.to_owned(),
            reachable: false,
            version: None,
            protocol: None,
            owner: None,
            tables: None,
            repairs: None,
            error: Some(chain(&e)),
        },
    }
}

/// The helper socket a daemon of this config uses.
pub fn helper_socket(config: &Config) -> PathBuf {
    config
        .network
        .helper_socket
        .clone()
        .or_else(|| {
            std::env::var_os("BANGER_HELPER_SOCKET")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(banger_helper::DEFAULT_SOCKET))
}

#[derive(Serialize)]
struct StatusOut {
    #[serde(flatten)]
    system: banger_system::SystemStatus,
    helper_socket: HelperProbe,
}

async fn status(json: bool) -> Result<ExitCode> {
    let system = banger_system::status(Path::new("/"), &SystemdHost)?;
    let config = Config::load()?;
    let probe = probe_helper(&helper_socket(&config)).await;
    if json {
        output::json(&StatusOut {
            system,
            helper_socket: probe,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{system}");
    match &probe {
        HelperProbe {
            reachable: true,
            version: Some(v),
            owner: Some(o),
            ..
        } => {
            println!(
                "helper:     reachable at {} (banger-helper {v}, serves uid {o})",
                probe.socket.display()
            );
            if let Some(t) = &probe.tables {
                println!(
                    "nft tables: {t} (restored {} times since the helper started)",
                    probe.repairs.unwrap_or(0)
                );
            }
        }
        _ => println!(
            "helper:     unreachable: {}",
            probe.error.as_deref().unwrap_or("unknown")
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// What `uninstall` removed.
#[derive(Debug, Default, Serialize)]
struct Removed {
    units: Vec<PathBuf>,
    services: Vec<String>,
    taps: Vec<String>,
    nft_table: bool,
    bridge: Option<String>,
}

async fn uninstall(a: UninstallArgs) -> Result<ExitCode> {
    require_root("uninstall")?;
    // The bridge: the one recorded at install, else this config's.
    let installed = banger_system::status(Path::new("/"), &SystemdHost)?;
    let config = Config::load()?;
    let bridge = match installed.bridge {
        Some(b) => b.name,
        None => config.network.bridge.clone(),
    };
    // The helper owns the network, so it takes it down: the running one
    // (at the socket the config names), else one started for this (no systemd, or it is not running), with
    // its policy and saved state (which says whether forwarding was off
    // before banger). This process never touches netlink or nftables.
    let (host, transient) = match HelperClient::connect(&helper_socket(&config)).await {
        Ok((client, _)) => (client, None),
        Err(_) => {
            let t = TransientHelper::start(&bridge, config.network.bridge_cidr)?;
            (t.client().await?, Some(t))
        }
    };
    let taps = host.list_taps().await?;
    if !taps.is_empty() && !a.force {
        let names: Vec<String> = taps.iter().map(ToString::to_string).collect();
        bail!(
            "VMs still run on {bridge} (taps {}): stop them first (banger vm stop VM), or pass --force to cut their network",
            names.join(", ")
        );
    }
    let mut removed = Removed::default();
    // The daemon first, so nothing asks for a tap while the network goes.
    if let Some(unit) = banger_system::stop_daemon(Path::new("/"), &SystemdHost)? {
        removed.services.push(unit);
    }
    for tap in taps {
        host.delete_tap(&tap).await?;
        removed.taps.push(tap.to_string());
    }
    let status = host.status().await?;
    // Deleting the link also drops what systemd-resolved held for it (the
    // `~vm` registration), and stops the split-DNS unit bound to it. The
    // helper's RemoveNetwork also puts IPv4 forwarding back as it found it.
    host.remove_network().await?;
    removed.nft_table = status.tables != TableState::NotWanted;
    if status.bridge {
        removed.bridge = Some(bridge.clone());
    }
    let after = host.status().await?;
    if after.bridge || after.tables != TableState::NotWanted || !host.list_taps().await?.is_empty()
    {
        bail!("host network still present after uninstall: {after:?}");
    }
    drop(transient);
    // Then the services and their files.
    let report = banger_system::uninstall(Path::new("/"), &SystemdHost)?;
    removed.units = report.removed;
    for s in report.disabled {
        if !removed.services.contains(&s) {
            removed.services.push(s);
        }
    }
    if a.json {
        output::json(&removed)?;
        return Ok(ExitCode::SUCCESS);
    }
    for u in &removed.units {
        println!("removed {}", u.display());
    }
    if !removed.services.is_empty() {
        println!("stopped {}", removed.services.join(" "));
    }
    for t in &removed.taps {
        println!("deleted tap {t}");
    }
    if removed.nft_table {
        println!("removed nft tables inet banger and bridge banger");
    }
    if let Some(b) = &removed.bridge {
        println!("removed bridge {b}");
    }
    println!("nothing of banger's host setup remains");
    Ok(ExitCode::SUCCESS)
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        src = c.source();
    }
    s
}

/// A `banger-helper` started by `uninstall` when none runs: the installed
/// binary (else the one beside this `banger`, else `PATH`'s), with the
/// installed policy and saved state when they exist, on a socket of its
/// own; killed when dropped.
struct TransientHelper {
    child: std::process::Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl TransientHelper {
    fn start(bridge: &str, cidr: impl std::fmt::Display) -> Result<TransientHelper> {
        let bin = banger_system::installed_helper(Path::new("/"))?
            .filter(|p| p.is_file())
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|e| e.parent().map(|d| d.join("banger-helper")))
                    .filter(|p| p.is_file())
            })
            .unwrap_or_else(|| PathBuf::from("banger-helper"));
        let dir = tempfile::Builder::new()
            .prefix("banger-uninstall-")
            .tempdir()
            .context("make a directory for the helper's socket")?;
        let socket = dir.path().join("helper.sock");
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["--owner", "0", "--bridge", bridge, "--socket"])
            .arg(&socket)
            .stdin(std::process::Stdio::null());
        let config = Path::new("/").join(banger_system::units::HELPER_CONFIG);
        if config.is_file() {
            cmd.arg("--config").arg(&config);
        } else {
            cmd.arg("--cidr").arg(cidr.to_string());
        }
        if Path::new(banger_system::units::HELPER_STATE).is_file() {
            cmd.args(["--state", banger_system::units::HELPER_STATE]);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} to take the network down", bin.display()))?;
        Ok(TransientHelper {
            child,
            socket,
            _dir: dir,
        })
    }

    /// A client, once the helper listens (up to 10 s).
    async fn client(&self) -> Result<HelperClient> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match HelperClient::connect(&self.socket).await {
                Ok((c, _)) => return Ok(c),
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(anyhow!(
                        "the helper started for uninstall did not answer: {e}"
                    ));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for TransientHelper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

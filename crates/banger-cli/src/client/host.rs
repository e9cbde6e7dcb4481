//! Which daemon this process talks to, chosen once: `--host`, else
//! `--context`, else `BANGER_HOST`, else `BANGER_CONTEXT`, else the
//! current context (`banger context use`), else this host's own daemon.
//! Child `banger` processes (a workspace's `vm exec` runs, the ssh
//! ProxyCommand) get the same choice through [`pass_host`].

use std::sync::OnceLock;

use anyhow::{Result, anyhow};

use super::ssh::SshTarget;
use crate::context::{self, Store};

pub const HOST_VAR: &str = "BANGER_HOST";
pub const CONTEXT_VAR: &str = "BANGER_CONTEXT";

/// Where the daemon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// This user's daemon on this host.
    Local,
    /// The login user's daemon on another host, over ssh.
    Ssh(SshTarget),
}

/// What the command line said (`--host`, `--context`).
#[derive(Debug, Default)]
struct Flags {
    host: Option<String>,
    context: Option<String>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();
static CHOSEN: OnceLock<Host> = OnceLock::new();

/// Record the global flags; called once, before any command runs.
pub fn select(host: Option<String>, context: Option<String>) {
    let _ = FLAGS.set(Flags { host, context });
}

/// The daemon this process talks to (resolved on first use).
pub fn host() -> Result<Host> {
    if let Some(e) = CHOSEN.get() {
        return Ok(e.clone());
    }
    let flags = FLAGS.get_or_init(Flags::default);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let e = resolve(
        flags.host.as_deref(),
        flags.context.as_deref(),
        env(HOST_VAR).as_deref(),
        env(CONTEXT_VAR).as_deref(),
        &Store::new(),
    )?;
    Ok(CHOSEN.get_or_init(|| e).clone())
}

/// The context named for this process (`--context`, else
/// `BANGER_CONTEXT`), if any: what `context show` reports before the
/// current one.
pub fn named_context() -> Option<String> {
    FLAGS
        .get()
        .and_then(|f| f.context.clone())
        .or_else(|| std::env::var(CONTEXT_VAR).ok())
        .filter(|c| !c.trim().is_empty())
}

fn resolve(
    host_flag: Option<&str>,
    context_flag: Option<&str>,
    host_env: Option<&str>,
    context_env: Option<&str>,
    store: &Store,
) -> Result<Host> {
    let host = |s: &str, from: &str| -> Result<Host> {
        SshTarget::parse(s)
            .map(Host::Ssh)
            .map_err(|e| anyhow!("{e} (from {from})"))
    };
    let named = |name: &str, from: &str| -> Result<Host> {
        if name == context::DEFAULT {
            return Ok(Host::Local);
        }
        let c = store.load(name).map_err(|e| anyhow!("{e} (from {from})"))?;
        host(&c.file.host, &format!("context {name}"))
    };
    if let Some(h) = host_flag {
        return host(h, "--host");
    }
    if let Some(c) = context_flag {
        return named(c, "--context");
    }
    if let Some(h) = host_env {
        return host(h, HOST_VAR);
    }
    if let Some(c) = context_env {
        return named(c, CONTEXT_VAR);
    }
    match store.current()? {
        Some(c) => named(
            &c,
            "the current context; `banger context use default` goes back to this host",
        ),
        None => Ok(Host::Local),
    }
}

/// Give a child `banger` this process's daemon, whatever its environment
/// or the current context would pick.
pub fn pass_host(cmd: &mut std::process::Command) -> Result<()> {
    match host()? {
        Host::Local => {
            cmd.env_remove(HOST_VAR).env(CONTEXT_VAR, context::DEFAULT);
        }
        Host::Ssh(t) => {
            cmd.env(HOST_VAR, t.url()).env_remove(CONTEXT_VAR);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextFile;

    #[test]
    fn precedence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_dir(dir.path());
        let ssh = |h: &str| Host::Ssh(SshTarget::parse(h).unwrap());
        assert_eq!(
            resolve(None, None, None, None, &store).unwrap(),
            Host::Local
        );
        store
            .create(
                "box",
                &ContextFile {
                    host: "ssh://me@box".into(),
                    description: String::new(),
                },
            )
            .unwrap();
        store.set_current("box").unwrap();
        assert_eq!(
            resolve(None, None, None, None, &store).unwrap(),
            ssh("ssh://me@box")
        );
        assert_eq!(
            resolve(None, None, None, Some("default"), &store).unwrap(),
            Host::Local
        );
        assert_eq!(
            resolve(None, None, Some("ssh://env"), Some("default"), &store).unwrap(),
            ssh("ssh://env")
        );
        assert_eq!(
            resolve(None, Some("default"), Some("ssh://env"), None, &store).unwrap(),
            Host::Local
        );
        assert_eq!(
            resolve(
                Some("ssh://flag"),
                Some("box"),
                Some("ssh://env"),
                None,
                &store
            )
            .unwrap(),
            ssh("ssh://flag")
        );
        let e = resolve(None, None, Some("nope"), None, &store).unwrap_err();
        assert!(e.to_string().contains("BANGER_HOST"), "{e}");
        let e = resolve(None, Some("gone"), None, None, &store).unwrap_err();
        assert!(e.to_string().contains("no context named"), "{e}");
    }
}

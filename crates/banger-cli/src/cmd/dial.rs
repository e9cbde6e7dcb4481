//! The remote end of `banger --host ssh://...`: `banger system dial-stdio`
//! splices its stdin and stdout to this user's daemon socket, starting the
//! daemon first when none answers (as any local command would), so a
//! client on another machine speaks the daemon's HTTP through ssh. It
//! always serves this host's daemon, whatever `BANGER_HOST` says here.
//!
//! Also here: host commands that run on the daemon's host rather than
//! through its API (`doctor`, `system ...`), which a remote endpoint runs
//! there over the same shared ssh connection ([`on_remote`]).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::client::ssh::{self, NOT_RUNNING, NOT_RUNNING_TEXT, SshTarget};
use crate::client::{self, Client, Transport};

#[derive(Args, Debug)]
pub struct DialArgs {
    /// Do not start the daemon: exit 3 when none runs
    #[arg(long)]
    no_start: bool,
}

pub async fn dial_stdio(a: DialArgs) -> Result<ExitCode> {
    let transport = client::local_transport()?;
    let Transport::Local { socket, .. } = &transport else {
        unreachable!("local_transport is local")
    };
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(_) if a.no_start => {
            eprintln!("banger: {NOT_RUNNING_TEXT}");
            return Ok(ExitCode::from(u8::try_from(NOT_RUNNING).unwrap_or(1)));
        }
        Err(_) => {
            Client::new(transport.clone()).ensure().await?;
            UnixStream::connect(socket)
                .with_context(|| format!("connect to {}", socket.display()))?
        }
    };
    // Blocking copies on two threads, through a buffer of our own:
    // `std::io::copy` would splice(2) the socket into sshd's stdout pipe,
    // and sshd was seen never to pick such pages up.
    let mut up = stream.try_clone().context("clone the daemon socket")?;
    std::thread::spawn(move || {
        let _ = pump(&mut std::io::stdin().lock(), &mut up);
        // The client is done sending: the daemon sees end of input and
        // closes its side once it has answered.
        let _ = up.shutdown(std::net::Shutdown::Write);
    });
    let mut down = &stream;
    let _ = pump(&mut down, &mut std::io::stdout().lock());
    // The daemon closed: nothing more will come, whatever stdin does.
    Ok(ExitCode::SUCCESS)
}

/// Copy until end of input, each read written out (and flushed) at once.
fn pump(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

/// Run `banger WORDS` on `target` over the shared ssh connection, with
/// this terminal's stdin and stdout, and exit as it exits.
pub async fn on_remote(target: &SshTarget, words: &[String]) -> Result<ExitCode> {
    let control = ssh::control_dir();
    ssh::ensure_control_dir(&control)?;
    let mut cmd = ssh::command(target, &control)?;
    // The remote shell joins the words: quote each.
    cmd.arg("banger");
    for w in words {
        let q = shlex::try_quote(w).map_err(|e| anyhow::anyhow!("cannot quote {w:?}: {e}"))?;
        cmd.arg(q.as_ref());
    }
    cmd.stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let out = tokio::process::Command::from(cmd)
        .spawn()
        .context("cannot run ssh (install openssh-client)")?
        .wait_with_output()
        .await
        .context("wait for ssh")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    if matches!(code, Some(255 | 127) | None) {
        bail!(ssh::explain(target, code, &stderr));
    }
    eprint!("{stderr}");
    Ok(ExitCode::from(
        u8::try_from(code.unwrap_or(1).clamp(0, 255)).unwrap_or(1),
    ))
}

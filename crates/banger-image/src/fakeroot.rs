//! A fakeroot session the daemon owns: `faked` runs as our own child and
//! the worker gets fakeroot's preload library, instead of going through the
//! `fakeroot` script.
//!
//! Why not the script: it starts `faked` as a daemon of its own, which a
//! parent-death signal cannot reach, so a bangerd killed mid-import left a
//! `faked` behind for good. Here `faked --foreground` is our child: it gets
//! SIGTERM when the thread that started it dies (SIGTERM, not SIGKILL, so it
//! removes its System V message queue and semaphore on the way out), and it
//! is stopped the same way when the session is dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::ImageError;

/// The System V flavour of faked and its preload library, as the
/// `fakeroot` script uses by default.
const FAKED: &str = "faked-sysv";
const LIBRARY: &str = "libfakeroot-sysv.so";
/// Where distributions put the preload library.
const LIBRARY_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libfakeroot",
    "/usr/lib64/libfakeroot",
    "/usr/lib/libfakeroot",
];

/// A running `faked`; commands made by [`Session::command`] run inside it.
#[derive(Debug)]
pub(crate) struct Session {
    faked: Child,
    key: String,
    library_dir: PathBuf,
}

fn missing() -> ImageError {
    ImageError::ToolMissing {
        tool: "fakeroot",
        package: "fakeroot",
    }
}

impl Session {
    /// Start `faked` and read the key the worker needs to reach it.
    pub(crate) fn start() -> Result<Session, ImageError> {
        let faked_exe = find_in_path(FAKED).ok_or_else(missing)?;
        let library_dir = LIBRARY_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join(LIBRARY).is_file())
            .ok_or_else(missing)?;
        let mut cmd = Command::new(&faked_exe);
        banger_disk::signal_on_parent_death(&mut cmd, Signal::SIGTERM);
        let mut faked = cmd
            .arg("--foreground")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| ImageError::io("spawn", &faked_exe, e))?;
        // faked announces itself as `KEY:PID` on one line.
        let mut line = String::new();
        let read = faked
            .stdout
            .take()
            .map(|out| BufReader::new(out).read_line(&mut line));
        let key = match (read, line.trim().split_once(':')) {
            (Some(Ok(_)), Some((key, _pid))) if !key.is_empty() => key.to_string(),
            _ => {
                let _ = faked.kill();
                let _ = faked.wait();
                return Err(ImageError::WorkerProtocol {
                    detail: format!("{FAKED} announced {line:?}, not KEY:PID"),
                });
            }
        };
        Ok(Session {
            faked,
            key,
            library_dir,
        })
    }

    /// `exe` to run inside this session (its children inherit it).
    pub(crate) fn command(&self, exe: &Path) -> Command {
        let mut cmd = Command::new(exe);
        cmd.env("FAKEROOTKEY", &self.key)
            .env("FAKED_MODE", "unknown-is-root")
            .env("LD_LIBRARY_PATH", &self.library_dir)
            .env("LD_PRELOAD", LIBRARY);
        cmd
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SIGTERM lets faked remove its IPC objects; it exits at once.
        if let Ok(pid) = i32::try_from(self.faked.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.faked.wait();
    }
}

pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

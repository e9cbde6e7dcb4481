//! Finding and running the e2fsprogs binaries. They live in /usr/sbin, which
//! is often missing from an unprivileged user's PATH, so that is searched too.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::DiskError;

/// The e2fsprogs tools this crate drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Mkfs,
    Debugfs,
    E2fsck,
    Resize2fs,
}

impl Tool {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tool::Mkfs => "mkfs.ext4",
            Tool::Debugfs => "debugfs",
            Tool::E2fsck => "e2fsck",
            Tool::Resize2fs => "resize2fs",
        }
    }

    /// The tool's absolute path, or `ToolMissing`.
    pub(crate) fn locate(self) -> Result<PathBuf, DiskError> {
        let name = self.name();
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path_var)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
            .ok_or(DiskError::ToolMissing { tool: name })
    }

    /// Run the tool with `args`, feeding `stdin` if given, and return its output
    /// whatever the exit status (callers decide what failure means).
    pub(crate) fn output<I, S>(
        self,
        image: &Path,
        args: I,
        stdin: Option<&[u8]>,
    ) -> Result<Output, DiskError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let exe = self.locate()?;
        let mut cmd = Command::new(&exe);
        die_with_parent(&mut cmd);
        cmd.args(args)
            // Stable, parseable messages whatever the user's locale.
            .env("LC_ALL", "C")
            // debugfs pipes long output through a pager when one is configured.
            .env("DEBUGFS_PAGER", "__none__")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| DiskError::io("spawn", exe.clone(), e))?;
        if let Some(input) = stdin {
            // Write from a thread: a large script could otherwise deadlock
            // against a child blocked on a full stdout pipe.
            let mut pipe = child.stdin.take().ok_or_else(|| {
                DiskError::io(
                    "open stdin of",
                    exe.clone(),
                    std::io::ErrorKind::BrokenPipe.into(),
                )
            })?;
            let input = input.to_vec();
            let writer = std::thread::spawn(move || pipe.write_all(&input));
            let out = child
                .wait_with_output()
                .map_err(|e| DiskError::io("wait for", exe.clone(), e))?;
            match writer.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(DiskError::io("write script to", image, e)),
                Err(_) => {
                    return Err(DiskError::io(
                        "write script to",
                        image,
                        std::io::Error::other("writer thread panicked"),
                    ));
                }
            }
            Ok(out)
        } else {
            child
                .wait_with_output()
                .map_err(|e| DiskError::io("wait for", exe, e))
        }
    }

    /// Run the tool and turn a non-zero exit into `ToolFailed`.
    pub(crate) fn run<I, S>(self, image: &Path, args: I) -> Result<Output, DiskError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.output(image, args, None)?;
        if !out.status.success() {
            return Err(self.failed(image, &out));
        }
        Ok(out)
    }

    pub(crate) fn failed(self, image: &Path, out: &Output) -> DiskError {
        DiskError::ToolFailed {
            tool: self.name(),
            image: image.to_path_buf(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Make the child receive SIGKILL when the thread that spawned it dies, so a
/// daemon killed mid-operation does not leave tools writing into files that
/// the next daemon start is about to clean away.
pub fn die_with_parent(cmd: &mut Command) {
    signal_on_parent_death(cmd, nix::sys::signal::Signal::SIGKILL);
}

/// Send `signal` to the child when the thread that spawned it dies: for a
/// child that must clean up after itself (SIGTERM) rather than just stop.
pub fn signal_on_parent_death(cmd: &mut Command, signal: nix::sys::signal::Signal) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only makes the
    // prctl(2) syscall, which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_message_names_the_package() {
        let err = DiskError::ToolMissing { tool: "mkfs.ext4" };
        assert_eq!(err.to_string(), "mkfs.ext4 not found; install e2fsprogs");
    }
}

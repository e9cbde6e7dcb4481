//! `bangerd.log`, bounded.
//!
//! The CLI starts the daemon with stdout and stderr appended to
//! `<data_dir>/bangerd.log`. When the daemon finds its stderr is that file,
//! it writes its log itself through a [`RotatingLog`]: past
//! `[logs] max_mib` the file is renamed `bangerd.log.1` (replacing the
//! previous one) and a fresh one opened and put on descriptors 1 and 2, so
//! a panic or a child's output lands in the current file too. Started any
//! other way (a systemd unit: the journal bounds itself) it logs to stderr.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The log file with its size bound.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    max: u64,
    /// Put each new file on descriptors 1 and 2 (off in unit tests).
    redirect: bool,
    state: Mutex<(File, u64)>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Points descriptors 1 and 2 at `file`.
fn redirect_stdio(file: &File) {
    for fd in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors, which this process
        // owns; `file` is open for the duration of the call.
        unsafe { libc::dup2(file.as_raw_fd(), fd) };
    }
}

impl RotatingLog {
    /// The rotating writer for `path` when stderr is that very file (the
    /// CLI started us); `None` otherwise.
    pub fn adopt_stderr(path: &Path, max: u64) -> Option<RotatingLog> {
        let on_disk = std::fs::symlink_metadata(path).ok()?;
        // SAFETY: fstat on descriptor 2 into a zeroed stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the buffer outlives the call.
        if unsafe { libc::fstat(2, &mut st) } != 0 {
            return None;
        }
        if st.st_dev != on_disk.dev() || st.st_ino != on_disk.ino() {
            return None;
        }
        let file = open_append(path).ok()?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let log = RotatingLog {
            path: path.to_path_buf(),
            max,
            redirect: true,
            state: Mutex::new((file, size)),
        };
        log.rotate_if_full(&mut log.state.lock().unwrap_or_else(|p| p.into_inner()));
        Some(log)
    }

    fn rotate_if_full(&self, state: &mut (File, u64)) {
        if state.1 < self.max {
            return;
        }
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        if std::fs::rename(&self.path, &old).is_err() {
            return;
        }
        match open_append(&self.path) {
            Ok(file) => {
                if self.redirect {
                    redirect_stdio(&file);
                }
                *state = (file, 0);
            }
            Err(_) => {
                // Keep writing to the renamed file rather than lose lines.
                state.1 = 0;
            }
        }
    }
}

impl Write for &RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = state.0.write(buf)?;
        state.1 += n as u64;
        self.rotate_if_full(&mut state);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingLog {
    type Writer = &'a RotatingLog;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_bound_keeping_one_previous_file() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("bangerd.log");
        let log = RotatingLog {
            path: path.clone(),
            max: 1000,
            redirect: false,
            state: Mutex::new((open_append(&path).unwrap(), 0)),
        };
        let line = [b'x'; 99];
        for _ in 0..35 {
            (&log).write_all(&line).unwrap();
            (&log).write_all(b"\n").unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let old = t.path().join("bangerd.log.1");
        assert!(size(&path) < 1000, "{}", size(&path));
        assert_eq!(size(&old), 1000);
        let total: u64 = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 2000, "{total}");
    }
}

//! A VM's console log, bounded: the guest's serial console and the VMM's
//! own output, written by the daemon, never by the VMM.
//!
//! The guest decides how much its console says, so a VMM never gets the
//! log file itself: QEMU's serial is a socket the daemon reads (QEMU drops
//! what the guest writes while no one is connected, so a daemon that is
//! down costs lines, never memory or disk), and its stdout and stderr, like
//! Firecracker's (whose stdout is the serial console), are a pipe the
//! daemon reads. [`drain`] copies each into a [`ConsoleLog`], which
//! rotates the file at `[logs] max_mib` (one `.1` kept), so a console
//! costs at most twice that on disk. A daemon restarted while a QEMU VM
//! runs attaches to its serial socket again; a pipe cannot be reopened,
//! so what Firecracker prints after a daemon restart is discarded.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The default bound of a console log, when the caller names none.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;

/// A console log file that rotates at its bound.
#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    max: u64,
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

impl ConsoleLog {
    /// Opens (appending to) `path`, rotated at `max` bytes.
    pub fn open(path: &Path, max: u64) -> io::Result<Arc<ConsoleLog>> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Arc::new(ConsoleLog {
            path: path.to_path_buf(),
            max: max.max(4096),
            state: Mutex::new((file, size)),
        }))
    }

    /// Appends `buf`, rotating first when it would pass the bound.
    pub fn write(&self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.1 > 0 && state.1 + buf.len() as u64 > self.max {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            *state = (open_append(&self.path)?, 0);
        }
        // A single write past the bound (larger than it) is cut to it.
        let take = buf
            .len()
            .min(usize::try_from(self.max).unwrap_or(usize::MAX));
        state.0.write_all(&buf[..take])?;
        state.1 += take as u64;
        Ok(())
    }
}

/// What [`drain`] keeps of the start of a stream, for a start-up error.
pub type Capture = Arc<Mutex<Vec<u8>>>;

/// Bytes of a stream's start kept in a [`Capture`].
const CAPTURE_MAX: usize = 16 * 1024;

/// Copies `reader` into `log` until its end, on a task of its own;
/// `capture` keeps the first [`CAPTURE_MAX`] bytes too.
pub fn drain<R>(
    mut reader: R,
    log: Arc<ConsoleLog>,
    capture: Option<Capture>,
) -> tokio::task::JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if let Some(c) = &capture {
                let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
                let room = CAPTURE_MAX.saturating_sub(c.len());
                c.extend_from_slice(&buf[..n.min(room)]);
            }
            // A full disk loses console lines, never the VM.
            let _ = log.write(&buf[..n]);
        }
    })
}

/// The last `max` bytes of the console log at `path` (never the whole
/// file: the guest wrote it).
pub fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = f.take(max).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_bound_and_keeps_one_previous_file() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("console.log");
        let log = ConsoleLog::open(&path, 10_000).unwrap();
        for _ in 0..250 {
            log.write(&[b'x'; 100]).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&path) <= 10_000);
        assert_eq!(size(&t.path().join("console.log.1")), 10_000);
        // One write larger than the bound is cut to it.
        log.write(&vec![b'y'; 50_000]).unwrap();
        assert_eq!(size(&path), 10_000);
        let total: u64 = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 20_000, "{total}");
    }

    #[test]
    fn tail_reads_only_the_end() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("c");
        std::fs::write(&path, format!("{}end\n", "a".repeat(100_000))).unwrap();
        assert_eq!(tail(&path, 4), "end\n");
        assert_eq!(tail(&t.path().join("none"), 4), "");
    }

    #[tokio::test]
    async fn drain_copies_and_captures_the_start() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("console.log");
        let log = ConsoleLog::open(&path, 1 << 20).unwrap();
        let capture = Capture::default();
        let (mut w, r) = tokio::io::duplex(64);
        let task = drain(r, log, Some(capture.clone()));
        tokio::io::AsyncWriteExt::write_all(&mut w, b"qemu: error\n")
            .await
            .unwrap();
        drop(w);
        task.await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"qemu: error\n");
        assert_eq!(*capture.lock().unwrap(), b"qemu: error\n");
    }
}

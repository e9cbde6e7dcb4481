//! `[[file_sync]]` at start: the configured host files and directories
//! copied into a VM once its agent answers, at every start.
//!
//! Every entry is resolved (canonical path under the canonical home, see
//! `banger_config::file_sync`) *before* the VM boots, so a bad entry refuses
//! the start and leaves the VM stopped. The copy is one tar, built on the
//! host with entries at their guest paths (root-owned, the entry's mode for
//! a file), streamed as it is built into the agent's `copy_in` under `/`.
//! Symlinks inside a synced directory are sent as symlinks, never followed,
//! so nothing outside the home travels.

use std::io::Write;
use std::path::{Path, PathBuf};

use banger_config::file_sync::FileSync;
use banger_proto::client::AgentClient;

use crate::error::{CoreError, CoreResult};

/// An entry checked and ready to copy.
#[derive(Debug, Clone)]
pub struct Resolved {
    host: PathBuf,
    guest: String,
    mode: Option<u32>,
}

/// Check every entry against the owner's home now; the first refusal wins.
pub fn resolve(entries: &[FileSync], home: &Path) -> CoreResult<Vec<Resolved>> {
    entries
        .iter()
        .map(|e| {
            let refuse = |m: String| CoreError::invalid(m);
            e.validate(home).map_err(refuse)?;
            Ok(Resolved {
                host: e.resolve(home).map_err(refuse)?,
                guest: e.guest.trim_end_matches('/').to_string(),
                mode: e.mode_bits().map_err(refuse)?,
            })
        })
        .collect()
}

/// The tar of all entries, at their guest paths relative to `/`, written
/// to `out` as it is built: root-owned, the entry's mode for a file,
/// symlinks as symlinks, directories walked in name order. Sockets, pipes
/// and devices are skipped: they cannot be copied.
fn build_tar<W: Write>(entries: &[Resolved], out: W) -> Result<W, String> {
    let mut tar = tar::Builder::new(out);
    for e in entries {
        let name = PathBuf::from(e.guest.trim_start_matches('/'));
        append(&mut tar, &e.host, &name, e.mode)
            .map_err(|err| format!("file_sync {}: {err}", e.host.display()))?;
    }
    tar.into_inner().map_err(|e| format!("file_sync: {e}"))
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    host: &Path,
    name: &Path,
    mode: Option<u32>,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(host)?;
    let mut h = tar::Header::new_gnu();
    h.set_metadata(&meta);
    h.set_uid(0);
    h.set_gid(0);
    let kind = meta.file_type();
    if kind.is_symlink() {
        h.set_size(0);
        tar.append_link(&mut h, name, std::fs::read_link(host)?)
    } else if kind.is_dir() {
        h.set_size(0);
        tar.append_data(&mut h, name, std::io::empty())?;
        let mut kids = std::fs::read_dir(host)?.collect::<std::io::Result<Vec<_>>>()?;
        kids.sort_by_key(std::fs::DirEntry::file_name);
        for k in kids {
            append(tar, &k.path(), &name.join(k.file_name()), None)?;
        }
        Ok(())
    } else if kind.is_file() {
        if let Some(mode) = mode {
            h.set_mode(mode);
        }
        tar.append_data(&mut h, name, std::fs::File::open(host)?)
    } else {
        Ok(())
    }
}

/// A `Write` that hands the bytes on in chunks over a bounded channel:
/// the tar builder's thread blocks while the guest is behind.
struct Chunks {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 << 10;

impl Chunks {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the copy into the guest ended",
            )
        })
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Copy the entries into the guest behind `agent`, streamed through the
/// agent's flow-controlled `copy_in` (unpacked under `/`, contained,
/// owners and modes kept): memory stays bounded whatever the size, and
/// the guest needs no `tar` of its own.
pub async fn copy_in(agent: &AgentClient, entries: &[Resolved]) -> CoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let fail = |m: String| CoreError::internal(m);
    let stream = agent
        .copy_in("/")
        .await
        .map_err(|e| fail(format!("file_sync: {e}")))?;
    let tx = stream.sender();
    let (chunks, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let owned = entries.to_vec();
    let build = tokio::task::spawn_blocking(move || {
        let w = Chunks {
            tx: chunks,
            buf: Vec::with_capacity(CHUNK),
        };
        let mut w = build_tar(&owned, w)?;
        w.flush().map_err(|e| format!("file_sync: {e}"))
    });
    let mut sent = Ok(());
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = tx.write(&chunk).await {
            sent = Err(format!("file_sync: into the guest: {e}"));
            break;
        }
    }
    drop(rx);
    let built = build
        .await
        .map_err(|e| format!("file_sync: {e}"))
        .and_then(|r| r);
    if let Err(e) = sent.and(built) {
        stream.abort();
        return Err(fail(e));
    }
    tx.close().map_err(|e| fail(format!("file_sync: {e}")))?;
    stream
        .finish()
        .await
        .map_err(|e| fail(format!("file_sync: into the guest: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_holds_guest_paths_modes_and_root_owner() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        std::fs::write(h.join("cfg"), "hello").unwrap();
        std::fs::create_dir(h.join("d")).unwrap();
        std::fs::write(h.join("d/inner"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", h.join("d/link")).unwrap();
        let entries = resolve(
            &[
                FileSync {
                    host: "~/cfg".into(),
                    guest: "/root/.cfg".into(),
                    mode: Some("0600".into()),
                },
                FileSync {
                    host: "~/d".into(),
                    guest: "/opt/d/".into(),
                    mode: None,
                },
            ],
            h,
        )
        .unwrap();
        let data = build_tar(&entries, Vec::new()).unwrap();
        let mut ar = tar::Archive::new(data.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let hd = e.header();
            assert_eq!((hd.uid().unwrap(), hd.gid().unwrap()), (0, 0), "root-owned");
            seen.push((
                e.path().unwrap().display().to_string(),
                hd.mode().unwrap() & 0o7777,
                hd.entry_type().is_symlink(),
            ));
        }
        assert!(
            seen.contains(&("root/.cfg".into(), 0o600, false)),
            "{seen:?}"
        );
        assert!(seen.iter().any(|s| s.0 == "opt/d/inner"), "{seen:?}");
        assert!(
            seen.iter().any(|s| s.0 == "opt/d/link" && s.2),
            "a symlink travels as a symlink, not its target: {seen:?}"
        );
    }

    #[test]
    fn entries_outside_the_home_refuse_before_anything_is_copied() {
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", home.path().join("etc")).unwrap();
        let e = resolve(
            &[FileSync {
                host: "~/etc/hostname".into(),
                guest: "/root/h".into(),
                mode: None,
            }],
            home.path(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("outside the owner's home"), "{e}");
    }
}

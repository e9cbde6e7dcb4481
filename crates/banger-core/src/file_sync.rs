//! `[[file_sync]]` at start: the configured host files and directories
//! copied into a VM once its agent answers, at every start.
//!
//! Every entry is resolved (canonical path under the canonical home, see
//! `banger_config::file_sync`) *before* the VM boots, so a bad entry refuses
//! the start and leaves the VM stopped. The copy is one tar, built on the
//! host with entries at their guest paths (root-owned, the entry's mode for
//! a file), unpacked by the guest's `tar` through one exec with stdin.
//! Symlinks inside a synced directory are sent as symlinks, never followed,
//! so nothing outside the home travels.

use std::path::{Path, PathBuf};

use banger_config::file_sync::FileSync;
use banger_proto::ExecRequest;
use banger_proto::client::AgentClient;

use crate::error::{CoreError, CoreResult};

/// An entry checked and ready to copy.
#[derive(Debug)]
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

/// The tar of all entries, at their guest paths relative to `/`.
fn build_tar(entries: &[Resolved]) -> Result<Vec<u8>, String> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    for e in entries {
        let name = e.guest.trim_start_matches('/');
        let meta = std::fs::metadata(&e.host)
            .map_err(|err| format!("file_sync {}: {err}", e.host.display()))?;
        let added = if meta.is_dir() {
            tar.append_dir_all(name, &e.host)
        } else {
            let mut f = std::fs::File::open(&e.host)
                .map_err(|err| format!("file_sync {}: {err}", e.host.display()))?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&meta);
            if let Some(mode) = e.mode {
                h.set_mode(mode);
            }
            tar.append_data(&mut h, name, &mut f)
        };
        added.map_err(|err| format!("file_sync {}: {err}", e.host.display()))?;
    }
    tar.into_inner().map_err(|e| format!("file_sync: {e}"))
}

/// Copy the entries into the guest behind `agent`.
pub async fn copy_in(agent: &AgentClient, entries: &[Resolved]) -> CoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let fail = |m: String| CoreError::internal(m);
    let data = build_tar(entries).map_err(fail)?;
    let handle = agent
        .exec(ExecRequest {
            argv: ["tar", "-x", "-p", "-f", "-", "--no-same-owner", "-C", "/"]
                .map(String::from)
                .to_vec(),
            env: Vec::new(),
            cwd: Some("/".into()),
            user: None,
            tty: None,
            stdin: true,
        })
        .await
        .map_err(|e| fail(format!("file_sync: cannot run tar in the guest: {e}")))?;
    handle
        .write_stdin(&data)
        .await
        .map_err(|e| fail(format!("file_sync: {e}")))?;
    handle
        .close_stdin()
        .map_err(|e| fail(format!("file_sync: {e}")))?;
    let out = handle
        .output()
        .await
        .map_err(|e| fail(format!("file_sync: {e}")))?;
    if out.status.shell_code() != 0 {
        return Err(fail(format!(
            "file_sync: tar in the guest failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
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
        let data = build_tar(&entries).unwrap();
        let mut ar = tar::Archive::new(data.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let hd = e.header();
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

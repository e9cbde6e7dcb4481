//! What a daemon killed in the middle of a snapshot operation leaves, and
//! how the next one puts it right at start: `saving` rows and their files
//! go, and VMs still marked `restoring` are killed and removed (made by the
//! restore) or left stopped (restored in place). The freeze of the source
//! VM is undone by the boot service (`resume_interrupted_save`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use banger_api::SnapshotState;

use crate::Services;
use crate::error::{CoreResult, internal};
use crate::scratch::remove_any;

/// The mark of a VM a restore has not finished (see the module doc): its
/// contents say whether the restore made the VM ([`MARK_NEW`]) or
/// restored an existing one ([`MARK_IN_PLACE`]).
pub(super) const RESTORING: &str = "restoring";
pub(super) const MARK_NEW: &str = "new";
pub(super) const MARK_IN_PLACE: &str = "in-place";

/// Writes the restore mark into a VM directory.
pub(super) fn mark_restoring(dir: &Path, kind: &str) -> CoreResult<()> {
    std::fs::write(dir.join(RESTORING), kind)
        .map_err(|e| crate::error::disk_error("mark a restore in progress", &e, dir))
}

/// Removes the restore mark: from here on the VM is whole.
pub(super) fn unmark_restoring(dir: &Path) -> CoreResult<()> {
    match std::fs::remove_file(dir.join(RESTORING)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(internal("finish the restore", &e)),
    }
}

impl Services {
    /// At daemon start (after `tmp/` was emptied): `saving` rows belong
    /// to a save that never finished, and directories under `snapshots/`
    /// that no ready row names were being moved. Both go.
    pub(crate) fn reconcile_snapshots(&self) {
        let Ok(all) = self.store.list_snapshots() else {
            return;
        };
        let mut known = HashSet::new();
        for s in all {
            if s.state == SnapshotState::Saving {
                tracing::info!(snapshot = %s.name, "removing a snapshot whose save never finished");
                remove_any(&self.layout.snapshots_dir().join(&s.id));
                let _ = self.store.delete_snapshot(&s.id);
            } else {
                known.insert(s.id);
            }
        }
        crate::scratch::remove_unknown(&self.layout.snapshots_dir(), &known);
    }

    /// At daemon start, after the VMs were re-adopted: a VM still marked
    /// `restoring` belongs to a restore a dead daemon never finished (its
    /// guest may run with its source's identity, or not run at all). Its
    /// VMM is killed; a VM the restore was making is removed with its
    /// files, one restored in place is left stopped.
    pub(crate) async fn reconcile_restores(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let Ok(vms) = self.vms.list() else {
            return notes;
        };
        for vm in vms {
            let dir = PathBuf::from(&vm.dir);
            let Ok(kind) = std::fs::read_to_string(dir.join(RESTORING)) else {
                continue;
            };
            let name = vm.name.clone();
            let vm = match self.boot.kill(vm).await {
                Ok(vm) => vm,
                Err(e) => {
                    tracing::warn!(vm = %name, error = %e, "kill of an unfinished restore");
                    continue;
                }
            };
            if kind.trim() == MARK_NEW {
                match tokio::task::block_in_place(|| self.vms.remove_locked(vm)) {
                    Ok(_) => notes.push(format!(
                        "removed vm {name}, which an interrupted restore was making"
                    )),
                    Err(e) => {
                        tracing::warn!(vm = %name, error = %e, "removal of an unfinished restore")
                    }
                }
            } else {
                remove_any(&dir.join(RESTORING));
                notes.push(format!(
                    "vm {name} was being restored in place when the daemon died; left stopped"
                ));
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use banger_api::{SnapshotRecord, SnapshotState, VmRestoreRequest, VmSpec};

    use crate::tools::Tools;
    use crate::{Config, Services};

    fn open(data: &std::path::Path) -> Services {
        let config = Config {
            data_dir: data.to_path_buf(),
            ..Config::default()
        };
        let tools = Tools {
            rootfs_worker: "banger-rootfs".into(),
            agent: "banger-agent".into(),
        };
        Services::open(config, tools).unwrap()
    }

    /// A save in progress is listed, as `saving` (it holds its name), and
    /// can be neither restored nor removed; a daemon that starts and finds
    /// it (its saver died) removes the row and the files.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_saving_snapshot_is_listed_as_such_refused_and_gone_after_a_restart() {
        let home = tempfile::tempdir().unwrap();
        let data = home.path().join("data");
        let s = open(&data);
        let scratch = s.layout.tmp_dir().join("snapshot-0123456789abcdef");
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::write(scratch.join("qemu.migration"), b"partial").unwrap();
        let record = SnapshotRecord {
            id: "0123456789abcdef".into(),
            name: "s1".into(),
            source_vm_id: "fedcba9876543210".into(),
            source_vm_name: "web".into(),
            kernel_id: "k".into(),
            image_id: "i".into(),
            agent: "initramfs-x.cpio".into(),
            agent_version: String::new(),
            vmm: "qemu".into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: 256,
                overlay_disk_bytes: 1 << 30,
                work_disk_bytes: 1 << 30,
            },
            has_nic: false,
            dir: scratch.display().to_string(),
            state_bytes: 0,
            disk_bytes: 0,
            state: SnapshotState::Saving,
            created_at: crate::now_rfc3339(),
        };
        s.store.insert_snapshot(&record).unwrap();

        let listed = s.list_snapshots().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, SnapshotState::Saving);
        let err = s.remove_snapshot("s1").await.unwrap_err().to_string();
        assert!(err.contains("still being saved"), "{err}");
        let req = VmRestoreRequest {
            name: Some("copy".into()),
        };
        let err = s
            .restore_snapshot("s1", &req, &|_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("still being saved"), "{err}");
        assert!(s.vms.list().unwrap().is_empty());

        drop(s);
        let s = open(&data);
        assert!(s.list_snapshots().unwrap().is_empty());
        assert!(!scratch.exists());
    }
}

//! The `snapshots` table: saved VM states. A row is inserted `saving`
//! before any file is written (so the name is taken) and flipped to
//! `ready` once the snapshot directory is whole; see `V5_SNAPSHOTS`.

use banger_api::model::VmSpec;
use banger_api::snapshot::{SnapshotRecord, SnapshotState};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Result, Store, StoreError, query_all, sql, unique_violation};

const KIND: &str = "snapshot";

const COLUMNS: &str = "id, name, source_vm_id, source_vm_name, kernel_id, image_id, agent, \
     agent_version, vmm, vcpus, memory_mib, overlay_disk_bytes, work_disk_bytes, has_nic, dir, \
     state_bytes, disk_bytes, state, created_at";

fn read(row: &Row<'_>) -> rusqlite::Result<(SnapshotRecord, String)> {
    Ok((
        SnapshotRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            source_vm_id: row.get(2)?,
            source_vm_name: row.get(3)?,
            kernel_id: row.get(4)?,
            image_id: row.get(5)?,
            agent: row.get(6)?,
            agent_version: row.get(7)?,
            vmm: row.get(8)?,
            spec: VmSpec {
                vcpus: row.get(9)?,
                memory_mib: row.get(10)?,
                overlay_disk_bytes: row.get(11)?,
                work_disk_bytes: row.get(12)?,
            },
            has_nic: row.get(13)?,
            dir: row.get(14)?,
            state_bytes: row.get(15)?,
            disk_bytes: row.get(16)?,
            // Replaced by `parse`.
            state: SnapshotState::Saving,
            created_at: row.get(18)?,
        },
        row.get(17)?,
    ))
}

fn parse((rec, state): (SnapshotRecord, String)) -> Result<SnapshotRecord> {
    let state = SnapshotState::parse(&state).ok_or_else(|| StoreError::Corrupt {
        what: format!("snapshot {} state {state:?}", rec.id),
    })?;
    Ok(SnapshotRecord { state, ..rec })
}

impl Store {
    /// Adds a snapshot (normally `saving`). Names are unique.
    pub fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        const OP: &str = "insert snapshot";
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                     ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
                ),
                params![
                    s.id,
                    s.name,
                    s.source_vm_id,
                    s.source_vm_name,
                    s.kernel_id,
                    s.image_id,
                    s.agent,
                    s.agent_version,
                    s.vmm,
                    s.spec.vcpus,
                    s.spec.memory_mib,
                    s.spec.overlay_disk_bytes,
                    s.spec.work_disk_bytes,
                    s.has_nic,
                    s.dir,
                    s.state_bytes,
                    s.disk_bytes,
                    s.state.as_str(),
                    s.created_at,
                ],
            )
            .map_err(unique_violation(KIND, OP, |field| match field {
                "id" => s.id.clone(),
                _ => s.name.clone(),
            }))?;
        Ok(())
    }

    /// Marks a snapshot whole, `ready`, with what only the save learned:
    /// its final directory and sizes, the agent's version and whether the
    /// VM had a NIC (the row was inserted before the save began).
    pub fn finish_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        let id = &s.id;
        let changed = self
            .conn()
            .execute(
                "UPDATE snapshots SET dir = ?2, state_bytes = ?3, disk_bytes = ?4,
                    agent_version = ?5, has_nic = ?6, state = 'ready'
                 WHERE id = ?1",
                params![
                    id,
                    s.dir,
                    s.state_bytes,
                    s.disk_bytes,
                    s.agent_version,
                    s.has_nic
                ],
            )
            .map_err(sql("finish snapshot"))?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                kind: KIND,
                key: id.to_string(),
            });
        }
        Ok(())
    }

    /// The snapshot with exactly this id.
    pub fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM snapshots WHERE id = ?1"),
                [id],
                read,
            )
            .optional()
            .map_err(sql("get snapshot"))?
            .map(parse)
            .transpose()
    }

    /// Every snapshot whose id or name starts with `prefix`, by name.
    pub fn find_snapshots_by_prefix(&self, prefix: &str) -> Result<Vec<SnapshotRecord>> {
        query_all(
            &self.conn(),
            "find snapshots by prefix",
            &format!(
                "SELECT {COLUMNS} FROM snapshots
                 WHERE substr(id, 1, length(?1)) = ?1 OR substr(name, 1, length(?1)) = ?1
                 ORDER BY name"
            ),
            [prefix],
            read,
        )?
        .into_iter()
        .map(parse)
        .collect()
    }

    /// All snapshots, by name.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        query_all(
            &self.conn(),
            "list snapshots",
            &format!("SELECT {COLUMNS} FROM snapshots ORDER BY name"),
            [],
            read,
        )?
        .into_iter()
        .map(parse)
        .collect()
    }

    /// Removes a snapshot's row (its files are the caller's business).
    pub fn delete_snapshot(&self, id: &str) -> Result<()> {
        let changed = self
            .conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])
            .map_err(sql("delete snapshot"))?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                kind: KIND,
                key: id.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use banger_api::model::VmSpec;
    use banger_api::snapshot::{SnapshotRecord, SnapshotState};

    use crate::StoreError;
    use crate::testutil::*;

    fn snap(id: &str, name: &str) -> SnapshotRecord {
        SnapshotRecord {
            id: id.into(),
            name: name.into(),
            source_vm_id: "0123456789abcdef".into(),
            source_vm_name: "web".into(),
            kernel_id: "k1".into(),
            image_id: "i1".into(),
            agent: "agent-key".into(),
            agent_version: "0.1.0".into(),
            vmm: "qemu".into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: 256,
                overlay_disk_bytes: 1 << 30,
                work_disk_bytes: 1 << 30,
            },
            has_nic: false,
            dir: format!("/d/tmp/snapshot-{id}"),
            state_bytes: 0,
            disk_bytes: 0,
            state: SnapshotState::Saving,
            created_at: "2026-12-01T12:00:00Z".into(),
        }
    }

    #[test]
    fn saving_then_ready_and_names_are_unique() {
        let t = temp_store();
        let s = snap("aaaaaaaaaaaaaaaa", "web-1");
        t.store.insert_snapshot(&s).unwrap();
        assert_eq!(t.store.get_snapshot(&s.id).unwrap(), Some(s.clone()));
        let dup = t
            .store
            .insert_snapshot(&snap("bbbbbbbbbbbbbbbb", "web-1"))
            .unwrap_err();
        assert!(
            matches!(&dup, StoreError::Duplicate { field, .. } if field == "name"),
            "{dup:?}"
        );
        let finished = SnapshotRecord {
            dir: "/d/snapshots/aaaaaaaaaaaaaaaa".into(),
            state_bytes: 100,
            disk_bytes: 200,
            agent_version: "9.9.9".into(),
            has_nic: !s.has_nic,
            ..s.clone()
        };
        t.store.finish_snapshot(&finished).unwrap();
        let got = t.store.get_snapshot(&s.id).unwrap().unwrap();
        assert_eq!(got.state, SnapshotState::Ready);
        assert_eq!((got.state_bytes, got.disk_bytes), (100, 200));
        // What the save learned is kept, not what the row began with.
        assert_eq!(
            (got.agent_version.as_str(), got.has_nic),
            ("9.9.9", !s.has_nic)
        );
        assert_eq!(got.dir, "/d/snapshots/aaaaaaaaaaaaaaaa");
        assert_eq!(t.store.find_snapshots_by_prefix("web").unwrap(), vec![got]);
        assert_eq!(t.store.list_snapshots().unwrap().len(), 1);
        t.store.delete_snapshot(&s.id).unwrap();
        assert!(matches!(
            t.store.delete_snapshot(&s.id),
            Err(StoreError::NotFound { .. })
        ));
        assert!(t.store.list_snapshots().unwrap().is_empty());
    }
}

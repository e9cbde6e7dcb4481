//! The `vms` table: each VM's durable intent. Guest IP and vsock CID are
//! UNIQUE here so two VMs can never be handed the same address, whatever
//! the allocator above does.

use banger_api::model::{VmRecord, VmSpec, VmState};
use banger_api::{Egress, VmNetwork};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{
    Result, Store, StoreError, is_foreign_key_violation, query_all, sql, unique_violation,
};

const KIND: &str = "vm";

const COLUMNS: &str = "id, name, image_id, kernel_id, vcpus, memory_mib, overlay_disk_bytes, \
     work_disk_bytes, desired_state, guest_ip, vsock_cid, dir, overlay_disk, work_disk, \
     created_at, updated_at, ports, network, egress, idle_suspend_secs";

/// A row before `desired_state` is parsed (see `RawImage` for why).
struct RawVm {
    record: VmRecord,
    desired_state: String,
    ports: String,
    network: String,
    egress: String,
}

fn read(row: &Row<'_>) -> rusqlite::Result<RawVm> {
    Ok(RawVm {
        record: VmRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            image_id: row.get(2)?,
            kernel_id: row.get(3)?,
            spec: VmSpec {
                vcpus: row.get(4)?,
                memory_mib: row.get(5)?,
                overlay_disk_bytes: row.get(6)?,
                work_disk_bytes: row.get(7)?,
            },
            // Replaced by `parse` below.
            desired_state: VmState::Stopped,
            guest_ip: row.get(9)?,
            vsock_cid: row.get(10)?,
            dir: row.get(11)?,
            overlay_disk: row.get(12)?,
            work_disk: row.get(13)?,
            created_at: row.get(14)?,
            updated_at: row.get(15)?,
            // Momentary, never a column: the daemon fills it from handles.
            paused: false,
            // Replaced by `parse` below.
            ports: Vec::new(),
            network: VmNetwork::Auto,
            egress: Egress::All,
            no_network: None,
            agent_fault: None,
            confinement: None,
            idle_suspend_secs: row.get(19)?,
            // Momentary, filled in by the daemon.
            suspended: false,
        },
        desired_state: row.get(8)?,
        ports: row.get(16)?,
        network: row.get(17)?,
        egress: row.get(18)?,
    })
}

impl RawVm {
    fn parse(self) -> Result<VmRecord> {
        let desired_state =
            VmState::parse(&self.desired_state).ok_or_else(|| StoreError::Corrupt {
                what: format!(
                    "vm {} desired state {:?}",
                    self.record.id, self.desired_state
                ),
            })?;
        let corrupt = |what: String| StoreError::Corrupt { what };
        let ports = serde_json::from_str(&self.ports)
            .map_err(|e| corrupt(format!("vm {} ports {:?}: {e}", self.record.id, self.ports)))?;
        let network = self
            .network
            .parse()
            .map_err(|e| corrupt(format!("vm {} network: {e}", self.record.id)))?;
        let egress = self
            .egress
            .parse()
            .map_err(|e| corrupt(format!("vm {} egress: {e}", self.record.id)))?;
        Ok(VmRecord {
            desired_state,
            ports,
            network,
            egress,
            ..self.record
        })
    }
}

fn parse_all(rows: Vec<RawVm>) -> Result<Vec<VmRecord>> {
    rows.into_iter().map(RawVm::parse).collect()
}

/// Maps a write's error: unique columns to `Duplicate`, a dangling image or
/// kernel reference to `NotFound` naming the missing one.
fn write_error(
    conn: &Connection,
    vm: &VmRecord,
    op: &'static str,
    err: rusqlite::Error,
) -> StoreError {
    if !is_foreign_key_violation(&err) {
        return unique_violation(KIND, op, |field| match field {
            "id" => vm.id.clone(),
            "guest_ip" => vm.guest_ip.clone(),
            "vsock_cid" => vm.vsock_cid.to_string(),
            _ => vm.name.clone(),
        })(err);
    }
    let exists = |table: &str, id: &str| {
        conn.query_row(
            &format!("SELECT 1 FROM {table} WHERE id = ?1"),
            [id],
            |_| Ok(()),
        )
        .optional()
        .map(|found| found.is_some())
    };
    match exists("images", &vm.image_id) {
        Ok(false) => StoreError::NotFound {
            kind: "image",
            key: vm.image_id.clone(),
        },
        Ok(true) => StoreError::NotFound {
            kind: "kernel",
            key: vm.kernel_id.clone(),
        },
        Err(source) => StoreError::Sqlite { op, source },
    }
}

/// The ports column: a JSON array of `PortSpec`.
fn ports_json(vm: &VmRecord) -> String {
    serde_json::to_string(&vm.ports).unwrap_or_else(|_| "[]".to_string())
}

impl Store {
    /// Adds a VM. Its image and kernel must exist.
    pub fn insert_vm(&self, vm: &VmRecord) -> Result<()> {
        const OP: &str = "insert vm";
        let conn = self.conn();
        conn.execute(
            &format!(
                "INSERT INTO vms ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                         ?17, ?18, ?19, ?20)"
            ),
            params![
                vm.id,
                vm.name,
                vm.image_id,
                vm.kernel_id,
                vm.spec.vcpus,
                vm.spec.memory_mib,
                vm.spec.overlay_disk_bytes,
                vm.spec.work_disk_bytes,
                vm.desired_state.as_str(),
                vm.guest_ip,
                vm.vsock_cid,
                vm.dir,
                vm.overlay_disk,
                vm.work_disk,
                vm.created_at,
                vm.updated_at,
                ports_json(vm),
                vm.network.as_str(),
                vm.egress.to_string(),
                vm.idle_suspend_secs,
            ],
        )
        .map_err(|err| write_error(&conn, vm, OP, err))?;
        Ok(())
    }

    /// Replaces every field of the VM with id `vm.id` except `created_at`.
    /// The caller sets `updated_at`.
    pub fn update_vm(&self, vm: &VmRecord) -> Result<()> {
        const OP: &str = "update vm";
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE vms SET name = ?2, image_id = ?3, kernel_id = ?4, vcpus = ?5,
                    memory_mib = ?6, overlay_disk_bytes = ?7, work_disk_bytes = ?8,
                    desired_state = ?9, guest_ip = ?10, vsock_cid = ?11, dir = ?12,
                    overlay_disk = ?13, work_disk = ?14, updated_at = ?15, ports = ?16,
                    network = ?17, egress = ?18, idle_suspend_secs = ?19
                 WHERE id = ?1",
                params![
                    vm.id,
                    vm.name,
                    vm.image_id,
                    vm.kernel_id,
                    vm.spec.vcpus,
                    vm.spec.memory_mib,
                    vm.spec.overlay_disk_bytes,
                    vm.spec.work_disk_bytes,
                    vm.desired_state.as_str(),
                    vm.guest_ip,
                    vm.vsock_cid,
                    vm.dir,
                    vm.overlay_disk,
                    vm.work_disk,
                    vm.updated_at,
                    ports_json(vm),
                    vm.network.as_str(),
                    vm.egress.to_string(),
                    vm.idle_suspend_secs,
                ],
            )
            .map_err(|err| write_error(&conn, vm, OP, err))?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                kind: KIND,
                key: vm.id.clone(),
            });
        }
        Ok(())
    }

    /// The VM with exactly this id.
    pub fn get_vm(&self, id: &str) -> Result<Option<VmRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM vms WHERE id = ?1"),
                [id],
                read,
            )
            .optional()
            .map_err(sql("get vm"))?
            .map(RawVm::parse)
            .transpose()
    }

    /// The VM with exactly this name.
    pub fn get_vm_by_name(&self, name: &str) -> Result<Option<VmRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM vms WHERE name = ?1"),
                [name],
                read,
            )
            .optional()
            .map_err(sql("get vm by name"))?
            .map(RawVm::parse)
            .transpose()
    }

    /// Every VM whose id or name starts with `prefix`, by name.
    pub fn find_vms_by_prefix(&self, prefix: &str) -> Result<Vec<VmRecord>> {
        parse_all(query_all(
            &self.conn(),
            "find vms by prefix",
            &format!(
                "SELECT {COLUMNS} FROM vms
                 WHERE substr(id, 1, length(?1)) = ?1 OR substr(name, 1, length(?1)) = ?1
                 ORDER BY name"
            ),
            [prefix],
            read,
        )?)
    }

    /// All VMs, by name.
    pub fn list_vms(&self) -> Result<Vec<VmRecord>> {
        parse_all(query_all(
            &self.conn(),
            "list vms",
            &format!("SELECT {COLUMNS} FROM vms ORDER BY name"),
            [],
            read,
        )?)
    }

    /// Removes a VM's row (its files are the caller's business).
    pub fn delete_vm(&self, id: &str) -> Result<()> {
        let changed = self
            .conn()
            .execute("DELETE FROM vms WHERE id = ?1", [id])
            .map_err(sql("delete vm"))?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                kind: KIND,
                key: id.to_string(),
            });
        }
        Ok(())
    }

    /// Guest IPs held by VMs, for the address allocator.
    pub fn used_ips(&self) -> Result<Vec<String>> {
        query_all(
            &self.conn(),
            "list used ips",
            "SELECT guest_ip FROM vms ORDER BY guest_ip",
            [],
            |row| row.get(0),
        )
    }

    /// vsock CIDs held by VMs, ascending.
    pub fn used_cids(&self) -> Result<Vec<u32>> {
        query_all(
            &self.conn(),
            "list used cids",
            "SELECT vsock_cid FROM vms ORDER BY vsock_cid",
            [],
            |row| row.get(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use banger_api::model::{VmRecord, VmSpec, VmState};
    use banger_api::{PortProto, PortSpec, VmNetwork};
    use proptest::prelude::*;

    use crate::StoreError;
    use crate::testutil::*;

    /// A store with image `i1` and kernel `k1`.
    fn seeded() -> TempStore {
        let t = temp_store();
        t.store.insert_kernel(&kernel("k1", "cloud")).unwrap();
        t.store.insert_image(&image("i1", "debian")).unwrap();
        t
    }

    #[test]
    fn round_trip_and_update() {
        let t = seeded();
        let mut v = vm("0123456789abcdef", "web", "i1", "k1", 2);
        t.store.insert_vm(&v).unwrap();
        assert_eq!(t.store.get_vm(&v.id).unwrap(), Some(v.clone()));
        assert_eq!(t.store.get_vm_by_name("web").unwrap(), Some(v.clone()));
        assert_eq!(t.store.get_vm("nope").unwrap(), None);

        t.store.insert_image(&image("i2", "alpine")).unwrap();
        v.desired_state = VmState::Running;
        v.spec.work_disk_bytes = 16 << 30;
        v.image_id = "i2".to_string();
        v.name = "web2".to_string();
        v.updated_at = "2025-02-02T00:00:00Z".to_string();
        let mut attempted = v.clone();
        attempted.created_at = "1999-01-01T00:00:00Z".to_string();
        t.store.update_vm(&attempted).unwrap();
        // created_at is immutable; everything else changes.
        assert_eq!(t.store.get_vm(&v.id).unwrap(), Some(v.clone()));
        assert_eq!(t.store.get_vm_by_name("web").unwrap(), None);
        assert_eq!(t.store.list_vms().unwrap(), vec![v]);
    }

    #[test]
    fn update_unknown_vm_is_not_found() {
        let t = seeded();
        let err = t
            .store
            .update_vm(&vm("v9", "ghost", "i1", "k1", 9))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { kind: "vm", key } if key == "v9"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "vm v9 not found");
    }

    #[test]
    fn conflicts_name_the_field() {
        let t = seeded();
        t.store.insert_vm(&vm("v1", "web", "i1", "k1", 2)).unwrap();

        let field_of = |v: &VmRecord| match t.store.insert_vm(v).unwrap_err() {
            StoreError::Duplicate {
                kind: "vm",
                field,
                value,
            } => (field, value),
            other => panic!("expected duplicate, got {other:?}"),
        };
        let same_name = vm("v2", "web", "i1", "k1", 3);
        assert_eq!(field_of(&same_name), ("name".into(), "web".into()));
        let mut same_ip = vm("v2", "db", "i1", "k1", 3);
        same_ip.guest_ip = "172.16.0.2".to_string();
        assert_eq!(field_of(&same_ip), ("guest_ip".into(), "172.16.0.2".into()));
        let mut same_cid = vm("v2", "db", "i1", "k1", 3);
        same_cid.vsock_cid = 5;
        assert_eq!(field_of(&same_cid), ("vsock_cid".into(), "5".into()));
        let same_id = vm("v1", "db", "i1", "k1", 3);
        assert_eq!(field_of(&same_id), ("id".into(), "v1".into()));

        // An update into another VM's address conflicts the same way.
        t.store.insert_vm(&vm("v2", "db", "i1", "k1", 3)).unwrap();
        let mut moved = vm("v2", "db", "i1", "k1", 3);
        moved.guest_ip = "172.16.0.2".to_string();
        let err = t.store.update_vm(&moved).unwrap_err();
        assert!(
            matches!(&err, StoreError::Duplicate { field, .. } if field == "guest_ip"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "vm with guest_ip 172.16.0.2 already exists"
        );
    }

    #[test]
    fn dangling_references_are_not_found() {
        let t = seeded();
        let err = t
            .store
            .insert_vm(&vm("v1", "web", "i9", "k1", 2))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { kind: "image", key } if key == "i9"),
            "{err:?}"
        );
        let err = t
            .store
            .insert_vm(&vm("v1", "web", "i1", "k9", 2))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { kind: "kernel", key } if key == "k9"),
            "{err:?}"
        );
        assert!(t.store.list_vms().unwrap().is_empty());
    }

    #[test]
    fn schema_rejects_low_cids() {
        let t = seeded();
        let mut v = vm("v1", "web", "i1", "k1", 2);
        v.vsock_cid = 2;
        let err = t.store.insert_vm(&v).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Sqlite {
                    op: "insert vm",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn used_addresses_and_prefix() {
        let t = seeded();
        assert!(t.store.used_ips().unwrap().is_empty());
        t.store
            .insert_vm(&vm("aa01", "web", "i1", "k1", 2))
            .unwrap();
        t.store.insert_vm(&vm("aa02", "db", "i1", "k1", 7)).unwrap();
        t.store
            .insert_vm(&vm("bb03", "aardvark", "i1", "k1", 4))
            .unwrap();
        assert_eq!(
            t.store.used_ips().unwrap(),
            vec!["172.16.0.2", "172.16.0.4", "172.16.0.7"]
        );
        assert_eq!(t.store.used_cids().unwrap(), vec![5, 7, 10]);

        let names = |p: &str| -> Vec<String> {
            t.store
                .find_vms_by_prefix(p)
                .unwrap()
                .into_iter()
                .map(|v| v.name)
                .collect()
        };
        assert_eq!(names("aa"), vec!["aardvark", "db", "web"]);
        assert_eq!(names("aa02"), vec!["db"]);
        assert_eq!(names("w"), vec!["web"]);
        assert!(names("x").is_empty());

        t.store.delete_vm("aa01").unwrap();
        assert_eq!(t.store.used_cids().unwrap(), vec![7, 10]);
        assert!(matches!(
            t.store.delete_vm("aa01").unwrap_err(),
            StoreError::NotFound { kind: "vm", .. }
        ));
    }

    #[test]
    fn unknown_state_is_corrupt() {
        let t = seeded();
        t.store.insert_vm(&vm("v1", "web", "i1", "k1", 2)).unwrap();
        // Bypass the CHECK the way a downgrade past a future state would.
        let conn = t.store.conn();
        conn.execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE vms SET desired_state = 'paused';
             PRAGMA ignore_check_constraints = OFF;",
        )
        .unwrap();
        drop(conn);
        let err = t.store.get_vm("v1").unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { what } if what.contains("paused")),
            "{err:?}"
        );
    }

    fn arb_port() -> impl Strategy<Value = PortSpec> {
        (
            proptest::option::of(any::<[u8; 4]>()),
            any::<u16>(),
            any::<u16>(),
            any::<bool>(),
        )
            .prop_map(|(ip, host_port, guest_port, udp)| PortSpec {
                host_ip: ip.map(std::net::Ipv4Addr::from),
                host_port,
                guest_port,
                proto: if udp { PortProto::Udp } else { PortProto::Tcp },
            })
    }

    fn arb_vm() -> impl Strategy<Value = VmRecord> {
        let text = "[ -~]{0,40}";
        (
            ("[a-z0-9]{1,16}", "[a-z][a-z0-9-]{0,30}"),
            (
                1u32..=u32::MAX,
                0u64..=i64::MAX as u64,
                0u64..=i64::MAX as u64,
                0u64..=i64::MAX as u64,
            ),
            any::<bool>(),
            (text, 3u32..=u32::MAX),
            (text, text, text, text, text),
            (
                proptest::collection::vec(arb_port(), 0..4),
                prop_oneof![
                    Just(VmNetwork::Auto),
                    Just(VmNetwork::Bridge),
                    Just(VmNetwork::None)
                ],
            ),
        )
            .prop_map(
                |(
                    (id, name),
                    (vcpus, mem, ovl, work),
                    running,
                    (ip, cid),
                    (dir, o, w, c, u),
                    (ports, network),
                )| {
                    VmRecord {
                        id,
                        name,
                        image_id: "i1".to_string(),
                        kernel_id: "k1".to_string(),
                        spec: VmSpec {
                            vcpus,
                            memory_mib: mem,
                            overlay_disk_bytes: ovl,
                            work_disk_bytes: work,
                        },
                        desired_state: if running {
                            VmState::Running
                        } else {
                            VmState::Stopped
                        },
                        guest_ip: ip,
                        vsock_cid: cid,
                        dir,
                        overlay_disk: o,
                        work_disk: w,
                        created_at: c,
                        updated_at: u,
                        paused: false,
                        ports,
                        network,
                        egress: banger_api::Egress::None,
                        no_network: None,
                        agent_fault: None,
                        confinement: None,
                        idle_suspend_secs: None,
                        suspended: false,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn vm_round_trips(v in arb_vm()) {
            let t = seeded();
            t.store.insert_vm(&v).unwrap();
            prop_assert_eq!(t.store.get_vm(&v.id).unwrap(), Some(v.clone()));
            prop_assert_eq!(t.store.list_vms().unwrap(), vec![v]);
        }
    }
}

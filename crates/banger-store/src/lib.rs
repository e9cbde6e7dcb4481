//! SQLite state store: the only crate that knows SQL.
//!
//! It owns the database file and its schema ([`migrations`]) and stores the
//! durable intent of banger: kernels, images and VMs as defined by
//! `banger_api::model`. It does not hold anything momentary (VMM pids, tap
//! names, sockets): those are rebuilt from the OS at daemon start and never
//! reach this crate.
//!
//! Every public operation is one statement or one transaction, so a crash
//! leaves either the old or the new state. Constraint violations come back as
//! typed [`StoreError`]s (`Duplicate`, `InUse`, `NotFound`) that the daemon
//! can turn into user-facing messages without knowing SQL.
//!
//! Lookups by key (`get_*`) return `Ok(None)` when nothing matches; operations
//! that need an existing row (`update_vm`, `delete_*`, `set_default_kernel`)
//! return [`StoreError::NotFound`].

mod error;
mod images;
mod kernels;
mod migrations;
mod snapshots;
mod vms;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use error::{Result, StoreError};

/// How long a statement waits for another connection's write lock before
/// failing with `SQLITE_BUSY`. Our transactions are a handful of rows, so
/// anything near this means something is stuck.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the banger database.
///
/// Cheap statements run directly under a mutex; callers on an async runtime
/// may call them inline or via `spawn_blocking`. Several `Store`s (even in
/// several processes) may open the same file: WAL mode lets readers proceed
/// while one writer commits.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema to the latest version.
    pub fn open(path: &Path) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // journal_mode answers with the mode actually set; anything but WAL
        // (e.g. on a filesystem without shared memory) must not pass silently.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                what: format!("{}: journal mode is {mode}, not wal", path.display()),
            });
        }
        // NORMAL is durable across application crashes in WAL mode; only a
        // power loss can drop the last commits, which reconcile tolerates.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        migrations::migrations()
            .to_latest(&mut conn)
            .map_err(StoreError::Migrate)?;
        Ok(Store {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied change:
        // every operation is a single statement or a transaction that rolls
        // back on drop. So a poisoned connection is still consistent.
        self.conn
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Wraps a SQLite error with the operation that failed.
fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { op, source }
}

/// Turns a UNIQUE or PRIMARY KEY violation on `kind`'s table into
/// [`StoreError::Duplicate`], naming the column and the offending value;
/// anything else becomes [`StoreError::Sqlite`].
fn unique_violation(
    kind: &'static str,
    op: &'static str,
    value_of: impl Fn(&str) -> String,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |err| match unique_column(&err) {
        Some(field) => {
            let value = value_of(&field);
            StoreError::Duplicate { kind, field, value }
        }
        None => StoreError::Sqlite { op, source: err },
    }
}

/// The column named by a UNIQUE/PRIMARY KEY failure: SQLite reports them as
/// `UNIQUE constraint failed: vms.guest_ip`. Partial unique indexes name the
/// index instead (`index 'kernels_single_default'`), handled by the caller's
/// `value_of`.
fn unique_column(err: &rusqlite::Error) -> Option<String> {
    let rusqlite::Error::SqliteFailure(code, Some(msg)) = err else {
        return None;
    };
    let unique = code.code == ErrorCode::ConstraintViolation
        && (code.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || code.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY);
    if !unique {
        return None;
    }
    let target = msg.split_once("constraint failed: ")?.1;
    // Multi-column constraints list `t.a, t.b`; ours are all single-column.
    let first = target.split(", ").next()?;
    let column = match first.split_once('.') {
        Some((_table, column)) => column,
        None => first,
    };
    Some(column.trim_matches('\'').to_string())
}

impl Store {
    /// `DELETE FROM {table} WHERE id = ?1` for a row other rows may
    /// reference: a missing row is `NotFound`, a refusal by a foreign key is
    /// `InUse` naming the users that `users` lists.
    fn delete_referenced(
        &self,
        op: &'static str,
        table: &'static str,
        kind: &'static str,
        id: &str,
        users: impl FnOnce(&Store) -> Result<Vec<String>>,
    ) -> Result<()> {
        let conn = self.conn();
        match conn.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id]) {
            Ok(0) => Err(StoreError::NotFound {
                kind,
                key: id.to_string(),
            }),
            Ok(_) => Ok(()),
            Err(err) if is_foreign_key_violation(&err) => {
                drop(conn);
                Err(StoreError::InUse {
                    kind,
                    key: id.to_string(),
                    users: users(self)?,
                })
            }
            Err(err) => Err(sql(op)(err)),
        }
    }
}

/// Whether `err` is a foreign-key failure. An `ON DELETE RESTRICT` action
/// fires as SQLITE_CONSTRAINT_TRIGGER rather than _FOREIGNKEY, so the message
/// is what tells the two apart from a real trigger.
fn is_foreign_key_violation(err: &rusqlite::Error) -> bool {
    match err {
        rusqlite::Error::SqliteFailure(code, msg) => {
            code.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
                || (code.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER
                    && msg.as_deref() == Some("FOREIGN KEY constraint failed"))
        }
        _ => false,
    }
}

/// The rows of `sql` bound to `params`, each read by `read`.
fn query_all<T>(
    conn: &Connection,
    op: &'static str,
    sql_text: &str,
    params: impl rusqlite::Params,
    read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql_text).map_err(sql(op))?;
    let rows = stmt.query_map(params, read).map_err(sql(op))?;
    rows.collect::<rusqlite::Result<Vec<T>>>().map_err(sql(op))
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Fixtures shared by the per-table tests.

    use banger_api::model::{
        ImageConfig, ImageRecord, ImageSource, KernelRecord, VmRecord, VmSpec, VmState,
    };

    use super::Store;

    pub(crate) struct TempStore {
        pub(crate) store: Store,
        // Keeps the directory alive as long as the store.
        _dir: tempfile::TempDir,
    }

    pub(crate) fn temp_store() -> TempStore {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("banger.db")).expect("open store");
        TempStore { store, _dir: dir }
    }

    pub(crate) fn kernel(id: &str, name: &str) -> KernelRecord {
        KernelRecord {
            id: id.to_string(),
            name: name.to_string(),
            release: Some("6.1.0-56-cloud-amd64".to_string()),
            kernel_path: format!("/k/{id}/vmlinuz"),
            vmlinux_path: Some(format!("/k/{id}/vmlinux")),
            config_path: Some(format!("/k/{id}/config")),
            initrd_path: None,
            modules_path: Some(format!("/k/{id}/modules/6.1.0-56-cloud-amd64")),
            modules_disk: Some(format!("/k/{id}/modules.ext4")),
            vmm_support: vec![banger_api::model::VmmSupport {
                vmm: "firecracker".to_string(),
                bootable: banger_api::model::Bootable::No,
                reasons: vec!["it needs an ELF vmlinux".to_string()],
            }],
            is_default: false,
            created_at: "2025-01-01T00:00:00Z".to_string(),
        }
    }

    pub(crate) fn image(id: &str, name: &str) -> ImageRecord {
        ImageRecord {
            id: id.to_string(),
            name: name.to_string(),
            source: ImageSource::Registry {
                reference: "debian:bookworm".to_string(),
                digest: "sha256:abc".to_string(),
            },
            base_path: format!("/i/{id}/base.ext4"),
            work_seed_path: format!("/i/{id}/work-seed"),
            size_bytes: 3 << 30,
            has_init: true,
            config: ImageConfig {
                env: vec!["PATH=/usr/bin".to_string()],
                working_dir: Some("/root".to_string()),
                user: None,
                entrypoint: vec![],
                cmd: vec!["bash".to_string()],
            },
            created_at: "2025-01-01T00:00:00Z".to_string(),
        }
    }

    /// A VM whose IP and CID derive from `n`, so distinct `n` never clash.
    pub(crate) fn vm(id: &str, name: &str, image_id: &str, kernel_id: &str, n: u8) -> VmRecord {
        VmRecord {
            id: id.to_string(),
            name: name.to_string(),
            image_id: image_id.to_string(),
            kernel_id: kernel_id.to_string(),
            spec: VmSpec {
                vcpus: 2,
                memory_mib: 1024,
                overlay_disk_bytes: 8 << 30,
                work_disk_bytes: 4 << 30,
            },
            desired_state: VmState::Stopped,
            guest_ip: format!("172.16.0.{n}"),
            vsock_cid: 3 + u32::from(n),
            dir: format!("/v/{id}"),
            overlay_disk: format!("/v/{id}/overlay.ext4"),
            work_disk: format!("/v/{id}/work.ext4"),
            created_at: "2025-01-01T00:00:00Z".to_string(),
            updated_at: "2025-01-01T00:00:00Z".to_string(),
            paused: false,
            ports: Vec::new(),
            network: banger_api::VmNetwork::Auto,
            egress: banger_api::Egress::All,
            no_network: None,
            agent_fault: None,
            confinement: None,
            idle_suspend_secs: None,
            suspended: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn store_is_send_and_sync() {
        assert_send_sync::<Store>();
    }

    #[test]
    fn open_sets_wal_foreign_keys_and_synchronous() {
        let t = temp_store();
        let conn = t.store.conn();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        // NORMAL is 1 (OFF 0, FULL 2).
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 7);
    }

    #[test]
    fn reopen_keeps_data() {
        let t = temp_store();
        let path = t.store.path().to_path_buf();
        t.store.insert_kernel(&kernel("k1", "default")).unwrap();
        t.store.insert_image(&image("i1", "debian")).unwrap();
        let v = vm("v1", "web", "i1", "k1", 2);
        t.store.insert_vm(&v).unwrap();
        drop(t.store);

        let reopened = Store::open(&path).unwrap();
        assert_eq!(reopened.get_vm("v1").unwrap(), Some(v));
        assert_eq!(reopened.list_images().unwrap().len(), 1);
        assert_eq!(reopened.list_kernels().unwrap().len(), 1);
    }

    #[test]
    fn two_handles_on_one_file_see_each_others_writes() {
        let t = temp_store();
        let other = Store::open(t.store.path()).unwrap();
        t.store.insert_kernel(&kernel("k1", "a")).unwrap();
        other.insert_image(&image("i1", "debian")).unwrap();
        other.insert_vm(&vm("v1", "web", "i1", "k1", 2)).unwrap();
        assert_eq!(t.store.list_vms().unwrap().len(), 1);
        assert!(other.get_kernel("k1").unwrap().is_some());

        // A write from one handle while the other holds a read transaction
        // must not fail: WAL readers do not block the writer.
        let reader = t.store.conn();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM vms;")
            .unwrap();
        other.insert_vm(&vm("v2", "db", "i1", "k1", 3)).unwrap();
        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        assert_eq!(t.store.list_vms().unwrap().len(), 2);
    }

    #[test]
    fn open_on_a_directory_fails_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::Open { path, .. } if path == dir.path()),
            "{err:?}"
        );
    }

    #[test]
    fn unique_column_parses_sqlite_messages() {
        let t = temp_store();
        let conn = t.store.conn();
        conn.execute_batch("CREATE TABLE t (a TEXT UNIQUE); INSERT INTO t VALUES ('x');")
            .unwrap();
        let err = conn.execute("INSERT INTO t VALUES ('x')", []).unwrap_err();
        assert_eq!(unique_column(&err).as_deref(), Some("a"));
    }
}

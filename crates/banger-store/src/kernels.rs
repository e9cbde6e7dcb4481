//! The `kernels` table.

use banger_api::model::KernelRecord;
use rusqlite::{OptionalExtension, Row, params};

use crate::{Result, Store, StoreError, query_all, sql, unique_violation};

const KIND: &str = "kernel";

const COLUMNS: &str = "id, name, release, kernel_path, initrd_path, modules_path, is_default, \
     created_at, vmlinux_path, config_path, modules_disk, vmm_support";

fn read(row: &Row<'_>) -> rusqlite::Result<KernelRecord> {
    let support: String = row.get(11)?;
    let vmm_support = serde_json::from_str(&support).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(11, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(KernelRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        release: row.get(2)?,
        kernel_path: row.get(3)?,
        initrd_path: row.get(4)?,
        modules_path: row.get(5)?,
        is_default: row.get(6)?,
        created_at: row.get(7)?,
        vmlinux_path: row.get(8)?,
        config_path: row.get(9)?,
        modules_disk: row.get(10)?,
        vmm_support,
    })
}

impl Store {
    /// Adds a kernel. If it is marked default, any previous default stops
    /// being one, in the same transaction.
    pub fn insert_kernel(&self, kernel: &KernelRecord) -> Result<()> {
        const OP: &str = "insert kernel";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql(OP))?;
        if kernel.is_default {
            tx.execute("UPDATE kernels SET is_default = 0 WHERE is_default = 1", [])
                .map_err(sql(OP))?;
        }
        // Strings and enums only: serialization cannot fail.
        let support = serde_json::to_string(&kernel.vmm_support).expect("vmm support serializes");
        tx.execute(
            &format!(
                "INSERT INTO kernels ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                kernel.id,
                kernel.name,
                kernel.release,
                kernel.kernel_path,
                kernel.initrd_path,
                kernel.modules_path,
                kernel.is_default,
                kernel.created_at,
                kernel.vmlinux_path,
                kernel.config_path,
                kernel.modules_disk,
                support,
            ],
        )
        .map_err(unique_violation(KIND, OP, |field| match field {
            "id" => kernel.id.clone(),
            _ => kernel.name.clone(),
        }))?;
        tx.commit().map_err(sql(OP))
    }

    /// The kernel with exactly this id.
    pub fn get_kernel(&self, id: &str) -> Result<Option<KernelRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM kernels WHERE id = ?1"),
                [id],
                read,
            )
            .optional()
            .map_err(sql("get kernel"))
    }

    /// The kernel with exactly this name.
    pub fn get_kernel_by_name(&self, name: &str) -> Result<Option<KernelRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM kernels WHERE name = ?1"),
                [name],
                read,
            )
            .optional()
            .map_err(sql("get kernel by name"))
    }

    /// Every kernel whose id or name starts with `prefix`, by name. The
    /// caller decides what several matches mean.
    pub fn find_kernels_by_prefix(&self, prefix: &str) -> Result<Vec<KernelRecord>> {
        // substr rather than LIKE: no escaping of `%` and `_` in user input.
        query_all(
            &self.conn(),
            "find kernels by prefix",
            &format!(
                "SELECT {COLUMNS} FROM kernels
                 WHERE substr(id, 1, length(?1)) = ?1 OR substr(name, 1, length(?1)) = ?1
                 ORDER BY name"
            ),
            [prefix],
            read,
        )
    }

    /// All kernels, by name.
    pub fn list_kernels(&self) -> Result<Vec<KernelRecord>> {
        query_all(
            &self.conn(),
            "list kernels",
            &format!("SELECT {COLUMNS} FROM kernels ORDER BY name"),
            [],
            read,
        )
    }

    /// The kernel marked default, if any.
    pub fn default_kernel(&self) -> Result<Option<KernelRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM kernels WHERE is_default = 1"),
                [],
                read,
            )
            .optional()
            .map_err(sql("get default kernel"))
    }

    /// Makes `id` the only default kernel.
    pub fn set_default_kernel(&self, id: &str) -> Result<()> {
        const OP: &str = "set default kernel";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql(OP))?;
        // Clear first: the partial unique index allows one default at a time.
        tx.execute(
            "UPDATE kernels SET is_default = 0 WHERE is_default = 1 AND id <> ?1",
            [id],
        )
        .map_err(sql(OP))?;
        let changed = tx
            .execute("UPDATE kernels SET is_default = 1 WHERE id = ?1", [id])
            .map_err(sql(OP))?;
        if changed == 0 {
            // Dropping the transaction rolls the clearing back.
            return Err(StoreError::NotFound {
                kind: KIND,
                key: id.to_string(),
            });
        }
        tx.commit().map_err(sql(OP))
    }

    /// Names of the VMs booting this kernel, sorted.
    pub fn vms_using_kernel(&self, id: &str) -> Result<Vec<String>> {
        query_all(
            &self.conn(),
            "list vms using kernel",
            "SELECT name FROM vms WHERE kernel_id = ?1 ORDER BY name",
            [id],
            |row| row.get(0),
        )
    }

    /// Removes a kernel no VM uses.
    pub fn delete_kernel(&self, id: &str) -> Result<()> {
        self.delete_referenced("delete kernel", "kernels", KIND, id, |s| {
            s.vms_using_kernel(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::StoreError;
    use crate::testutil::*;

    #[test]
    fn round_trip() {
        let t = temp_store();
        let mut k = kernel("k1", "cloud");
        k.initrd_path = Some("/k/k1/initrd".to_string());
        t.store.insert_kernel(&k).unwrap();
        let mut bare = kernel("k2", "bare");
        bare.release = None;
        bare.modules_path = None;
        bare.vmlinux_path = None;
        bare.modules_disk = None;
        bare.vmm_support = Vec::new();
        t.store.insert_kernel(&bare).unwrap();

        assert_eq!(t.store.get_kernel("k1").unwrap(), Some(k.clone()));
        assert_eq!(
            t.store.get_kernel_by_name("bare").unwrap(),
            Some(bare.clone())
        );
        assert_eq!(t.store.get_kernel("nope").unwrap(), None);
        assert_eq!(t.store.list_kernels().unwrap(), vec![bare, k]);
    }

    #[test]
    fn duplicate_name_and_id_name_the_field() {
        let t = temp_store();
        t.store.insert_kernel(&kernel("k1", "cloud")).unwrap();
        let err = t.store.insert_kernel(&kernel("k2", "cloud")).unwrap_err();
        assert!(
            matches!(&err, StoreError::Duplicate { kind: "kernel", field, value }
                if field == "name" && value == "cloud"),
            "{err:?}"
        );
        let err = t.store.insert_kernel(&kernel("k1", "other")).unwrap_err();
        assert!(
            matches!(&err, StoreError::Duplicate { field, value, .. }
                if field == "id" && value == "k1"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "kernel with id k1 already exists");
    }

    #[test]
    fn default_kernel_is_exclusive() {
        let t = temp_store();
        assert_eq!(t.store.default_kernel().unwrap(), None);
        let mut a = kernel("ka", "a");
        a.is_default = true;
        t.store.insert_kernel(&a).unwrap();
        let mut b = kernel("kb", "b");
        b.is_default = true;
        t.store.insert_kernel(&b).unwrap();
        assert_eq!(t.store.default_kernel().unwrap().unwrap().id, "kb");
        assert!(!t.store.get_kernel("ka").unwrap().unwrap().is_default);

        t.store.set_default_kernel("ka").unwrap();
        let defaults: Vec<_> = t
            .store
            .list_kernels()
            .unwrap()
            .into_iter()
            .filter(|k| k.is_default)
            .map(|k| k.id)
            .collect();
        assert_eq!(defaults, vec!["ka"]);

        // Setting an unknown kernel leaves the current default in place.
        let err = t.store.set_default_kernel("zz").unwrap_err();
        assert!(
            matches!(err, StoreError::NotFound { kind: "kernel", .. }),
            "{err:?}"
        );
        assert_eq!(t.store.default_kernel().unwrap().unwrap().id, "ka");
        // Idempotent on the current default.
        t.store.set_default_kernel("ka").unwrap();
        assert_eq!(t.store.default_kernel().unwrap().unwrap().id, "ka");
    }

    #[test]
    fn prefix_matches_id_or_name() {
        let t = temp_store();
        t.store.insert_kernel(&kernel("ab12", "cloud")).unwrap();
        t.store.insert_kernel(&kernel("ab34", "custom")).unwrap();
        t.store.insert_kernel(&kernel("cd56", "abc")).unwrap();
        let ids = |p: &str| -> Vec<String> {
            t.store
                .find_kernels_by_prefix(p)
                .unwrap()
                .into_iter()
                .map(|k| k.id)
                .collect()
        };
        assert_eq!(ids("ab"), vec!["cd56", "ab12", "ab34"]);
        assert_eq!(ids("ab1"), vec!["ab12"]);
        assert_eq!(ids("cu"), vec!["ab34"]);
        assert!(ids("%").is_empty());
        assert!(ids("zz").is_empty());
    }

    #[test]
    fn delete_in_use_kernel_is_refused() {
        let t = temp_store();
        t.store.insert_kernel(&kernel("k1", "cloud")).unwrap();
        t.store.insert_image(&image("i1", "debian")).unwrap();
        t.store.insert_vm(&vm("v1", "web", "i1", "k1", 2)).unwrap();
        assert_eq!(t.store.vms_using_kernel("k1").unwrap(), vec!["web"]);

        let err = t.store.delete_kernel("k1").unwrap_err();
        assert!(
            matches!(&err, StoreError::InUse { kind: "kernel", key, users }
                if key == "k1" && users == &["web"]),
            "{err:?}"
        );
        t.store.delete_vm("v1").unwrap();
        t.store.delete_kernel("k1").unwrap();
        assert_eq!(t.store.get_kernel("k1").unwrap(), None);
        let err = t.store.delete_kernel("k1").unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    }
}

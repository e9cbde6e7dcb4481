//! The `images` table. `source` and `config` are stored as JSON so new
//! source kinds and config keys need no schema change.

use std::collections::HashSet;

use banger_api::model::{ImageConfig, ImageRecord, ImageSource};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Result, Store, StoreError, query_all, sql, unique_violation};

const KIND: &str = "image";

const COLUMNS: &str =
    "id, name, source, base_path, work_seed_path, size_bytes, has_init, config, created_at";

/// A row as SQLite has it, before the JSON columns are parsed: parsing
/// failures are [`StoreError::Corrupt`], which a rusqlite row callback
/// cannot return.
struct RawImage {
    id: String,
    name: String,
    source: String,
    base_path: String,
    work_seed_path: String,
    size_bytes: u64,
    has_init: bool,
    config: String,
    created_at: String,
}

fn read(row: &Row<'_>) -> rusqlite::Result<RawImage> {
    Ok(RawImage {
        id: row.get(0)?,
        name: row.get(1)?,
        source: row.get(2)?,
        base_path: row.get(3)?,
        work_seed_path: row.get(4)?,
        size_bytes: row.get(5)?,
        has_init: row.get(6)?,
        config: row.get(7)?,
        created_at: row.get(8)?,
    })
}

impl RawImage {
    fn parse(self) -> Result<ImageRecord> {
        let source: ImageSource =
            serde_json::from_str(&self.source).map_err(|e| StoreError::Corrupt {
                what: format!("image {} source: {e}", self.id),
            })?;
        let config: ImageConfig =
            serde_json::from_str(&self.config).map_err(|e| StoreError::Corrupt {
                what: format!("image {} config: {e}", self.id),
            })?;
        Ok(ImageRecord {
            id: self.id,
            name: self.name,
            source,
            base_path: self.base_path,
            work_seed_path: self.work_seed_path,
            size_bytes: self.size_bytes,
            has_init: self.has_init,
            config,
            created_at: self.created_at,
        })
    }
}

fn parse_all(rows: Vec<RawImage>) -> Result<Vec<ImageRecord>> {
    rows.into_iter().map(RawImage::parse).collect()
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // These types are plain strings and vectors: serialization cannot fail.
    serde_json::to_string(value).expect("image json serializes")
}

impl Store {
    /// Adds an image.
    pub fn insert_image(&self, image: &ImageRecord) -> Result<()> {
        self.insert_image_with_blobs(image, &[])
    }

    /// Adds an image and the cache blobs (`sha256:<hex>`) it was built
    /// from, in one transaction.
    pub fn insert_image_with_blobs(&self, image: &ImageRecord, blobs: &[String]) -> Result<()> {
        const OP: &str = "insert image";
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql(OP))?;
        tx.execute(
            &format!("INSERT INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                image.id,
                image.name,
                to_json(&image.source),
                image.base_path,
                image.work_seed_path,
                image.size_bytes,
                image.has_init,
                to_json(&image.config),
                image.created_at,
            ],
        )
        .map_err(unique_violation(KIND, OP, |field| match field {
            "id" => image.id.clone(),
            _ => image.name.clone(),
        }))?;
        {
            // Layers may repeat within an image; the schema wants each once.
            let unique: std::collections::BTreeSet<&String> = blobs.iter().collect();
            let mut add = tx
                .prepare("INSERT INTO image_blobs (image_id, digest) VALUES (?1, ?2)")
                .map_err(sql(OP))?;
            for digest in unique {
                add.execute(params![image.id, digest]).map_err(sql(OP))?;
            }
        }
        tx.commit().map_err(sql(OP))
    }

    /// The cache blobs the image was built from, sorted.
    pub fn image_blobs(&self, id: &str) -> Result<Vec<String>> {
        query_all(
            &self.conn(),
            "list image blobs",
            "SELECT digest FROM image_blobs WHERE image_id = ?1 ORDER BY digest",
            [id],
            |row| row.get(0),
        )
    }

    /// Every blob some image was built from: what a cache prune keeps.
    pub fn referenced_blobs(&self) -> Result<HashSet<String>> {
        Ok(query_all(
            &self.conn(),
            "list referenced blobs",
            "SELECT DISTINCT digest FROM image_blobs",
            [],
            |row| row.get(0),
        )?
        .into_iter()
        .collect())
    }

    /// The image with exactly this id.
    pub fn get_image(&self, id: &str) -> Result<Option<ImageRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM images WHERE id = ?1"),
                [id],
                read,
            )
            .optional()
            .map_err(sql("get image"))?
            .map(RawImage::parse)
            .transpose()
    }

    /// The image with exactly this name.
    pub fn get_image_by_name(&self, name: &str) -> Result<Option<ImageRecord>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM images WHERE name = ?1"),
                [name],
                read,
            )
            .optional()
            .map_err(sql("get image by name"))?
            .map(RawImage::parse)
            .transpose()
    }

    /// Every image whose id or name starts with `prefix`, by name.
    pub fn find_images_by_prefix(&self, prefix: &str) -> Result<Vec<ImageRecord>> {
        parse_all(query_all(
            &self.conn(),
            "find images by prefix",
            &format!(
                "SELECT {COLUMNS} FROM images
                 WHERE substr(id, 1, length(?1)) = ?1 OR substr(name, 1, length(?1)) = ?1
                 ORDER BY name"
            ),
            [prefix],
            read,
        )?)
    }

    /// All images, by name.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        parse_all(query_all(
            &self.conn(),
            "list images",
            &format!("SELECT {COLUMNS} FROM images ORDER BY name"),
            [],
            read,
        )?)
    }

    /// Names of the VMs built from this image, sorted.
    pub fn vms_using_image(&self, id: &str) -> Result<Vec<String>> {
        query_all(
            &self.conn(),
            "list vms using image",
            "SELECT name FROM vms WHERE image_id = ?1 ORDER BY name",
            [id],
            |row| row.get(0),
        )
    }

    /// Removes an image no VM uses.
    pub fn delete_image(&self, id: &str) -> Result<()> {
        self.delete_referenced("delete image", "images", KIND, id, |s| {
            s.vms_using_image(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use banger_api::model::{ImageConfig, ImageSource};

    use crate::StoreError;
    use crate::testutil::*;

    #[test]
    fn round_trip_every_source_kind() {
        let t = temp_store();
        let registry = image("i1", "debian");
        let mut dir = image("i2", "local");
        dir.source = ImageSource::Directory {
            path: "/src/rootfs".to_string(),
        };
        dir.config = ImageConfig::default();
        dir.has_init = false;
        let mut tarball = image("i3", "tarred");
        tarball.source = ImageSource::Tarball {
            path: "/src/rootfs.tar.zst".to_string(),
        };
        tarball.size_bytes = u64::try_from(i64::MAX).unwrap();
        for i in [&registry, &dir, &tarball] {
            t.store.insert_image(i).unwrap();
        }
        assert_eq!(t.store.get_image("i1").unwrap(), Some(registry.clone()));
        assert_eq!(
            t.store.get_image_by_name("local").unwrap(),
            Some(dir.clone())
        );
        assert_eq!(t.store.get_image("i9").unwrap(), None);
        assert_eq!(t.store.list_images().unwrap(), vec![registry, dir, tarball]);
    }

    #[test]
    fn duplicate_name_names_the_field() {
        let t = temp_store();
        t.store.insert_image(&image("i1", "debian")).unwrap();
        let err = t.store.insert_image(&image("i2", "debian")).unwrap_err();
        assert!(
            matches!(&err, StoreError::Duplicate { kind: "image", field, value }
                if field == "name" && value == "debian"),
            "{err:?}"
        );
    }

    #[test]
    fn delete_in_use_image_is_refused() {
        let t = temp_store();
        t.store.insert_kernel(&kernel("k1", "cloud")).unwrap();
        t.store.insert_image(&image("i1", "debian")).unwrap();
        t.store.insert_vm(&vm("v1", "web", "i1", "k1", 2)).unwrap();
        t.store.insert_vm(&vm("v2", "api", "i1", "k1", 3)).unwrap();

        let err = t.store.delete_image("i1").unwrap_err();
        assert!(
            matches!(&err, StoreError::InUse { kind: "image", key, users }
                if key == "i1" && users == &["api", "web"]),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "image i1 is in use by api, web");
        assert!(t.store.get_image("i1").unwrap().is_some());

        t.store.delete_vm("v1").unwrap();
        t.store.delete_vm("v2").unwrap();
        t.store.delete_image("i1").unwrap();
        assert!(matches!(
            t.store.delete_image("i1").unwrap_err(),
            StoreError::NotFound { kind: "image", .. }
        ));
    }

    #[test]
    fn blobs_go_with_their_image() {
        let t = temp_store();
        let shared = "sha256:aa".to_string();
        let only_one = "sha256:bb".to_string();
        let only_two = "sha256:cc".to_string();
        t.store
            .insert_image_with_blobs(
                &image("i1", "one"),
                &[only_one.clone(), shared.clone(), shared.clone()],
            )
            .unwrap();
        t.store
            .insert_image_with_blobs(&image("i2", "two"), &[shared.clone(), only_two.clone()])
            .unwrap();
        assert_eq!(
            t.store.image_blobs("i1").unwrap(),
            vec![shared.clone(), only_one.clone()]
        );
        assert_eq!(
            t.store.referenced_blobs().unwrap(),
            HashSet::from([shared.clone(), only_one, only_two.clone()])
        );
        t.store.delete_image("i1").unwrap();
        assert_eq!(t.store.image_blobs("i1").unwrap(), Vec::<String>::new());
        assert_eq!(
            t.store.referenced_blobs().unwrap(),
            HashSet::from([shared, only_two])
        );
    }

    #[test]
    fn failed_insert_leaves_no_blob_rows() {
        let t = temp_store();
        t.store.insert_image(&image("i1", "one")).unwrap();
        let err = t
            .store
            .insert_image_with_blobs(&image("i2", "one"), &["sha256:aa".to_string()])
            .unwrap_err();
        assert!(matches!(err, StoreError::Duplicate { .. }), "{err:?}");
        assert!(t.store.referenced_blobs().unwrap().is_empty());
        // Not a digest: the schema refuses it and the image is not added.
        assert!(
            t.store
                .insert_image_with_blobs(&image("i3", "three"), &["md5:x".to_string()])
                .is_err()
        );
        assert_eq!(t.store.get_image("i3").unwrap(), None);
    }

    #[test]
    fn prefix_matches_id_or_name() {
        let t = temp_store();
        t.store.insert_image(&image("0a1b", "debian")).unwrap();
        t.store.insert_image(&image("de77", "alpine")).unwrap();
        let names = |p: &str| -> Vec<String> {
            t.store
                .find_images_by_prefix(p)
                .unwrap()
                .into_iter()
                .map(|i| i.name)
                .collect()
        };
        assert_eq!(names("de"), vec!["alpine", "debian"]);
        assert_eq!(names("0a"), vec!["debian"]);
        assert_eq!(names("_"), Vec::<String>::new());
    }

    #[test]
    fn unparsable_stored_json_is_corrupt() {
        let t = temp_store();
        t.store.insert_image(&image("i1", "debian")).unwrap();
        // A source kind this build does not know, as a newer banger may
        // write, reads as Unknown (an older CLI must still list it)...
        t.store
            .conn()
            .execute(
                "UPDATE images SET source = '{\"kind\":\"nfs\"}' WHERE id = 'i1'",
                [],
            )
            .unwrap();
        let read = t.store.get_image("i1").unwrap().unwrap();
        assert_eq!(read.source, banger_api::ImageSource::Unknown);
        // ...but JSON that is no source at all is corruption.
        t.store
            .conn()
            .execute("UPDATE images SET source = '[1, 2]' WHERE id = 'i1'", [])
            .unwrap();
        let err = t.store.get_image("i1").unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { what } if what.contains("image i1 source")),
            "{err:?}"
        );
        assert!(matches!(
            t.store.list_images().unwrap_err(),
            StoreError::Corrupt { .. }
        ));
    }
}

//! The image registry: a root filesystem (directory or tarball) becomes a
//! read-only ext4 base plus a work seed (`/root` of the image, with its true
//! ownership) that every VM's work disk is built from.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use banger_api::{ApiError, ErrorCode, ImageImportRequest, ImageRecord, ImageSource, validate};
use banger_store::Store;

use crate::error::{CoreResult, chain, internal, store_err};
use crate::services::{EventSink, Tools, remove_any, remove_unknown, stage};
use crate::{Layout, alloc, now_rfc3339, resolve};

#[derive(Debug)]
pub struct ImageService {
    layout: Arc<Layout>,
    store: Arc<Store>,
    tools: Tools,
    /// Serialises name checks with publication so two imports cannot both
    /// claim a name; the slow unpack runs under it too, which is acceptable
    /// for a per-user daemon and keeps the disk from filling twice at once.
    lock: Mutex<()>,
}

impl ImageService {
    pub fn new(layout: Arc<Layout>, store: Arc<Store>, tools: Tools) -> Self {
        Self {
            layout,
            store,
            tools,
            lock: Mutex::new(()),
        }
    }

    pub fn list(&self) -> CoreResult<Vec<ImageRecord>> {
        self.store.list_images().map_err(store_err)
    }

    pub fn get(&self, reference: &str) -> CoreResult<ImageRecord> {
        let candidates = self
            .store
            .find_images_by_prefix(reference)
            .map_err(store_err)?;
        resolve::pick("image", reference, candidates)
    }

    pub fn import(
        &self,
        req: &ImageImportRequest,
        events: EventSink<'_>,
    ) -> CoreResult<ImageRecord> {
        validate::artifact_name(&req.name, "image name").map_err(ApiError::invalid)?;
        let src = Path::new(&req.path);
        if !src.is_absolute() {
            return Err(ApiError::invalid(format!(
                "image path {:?} must be absolute",
                req.path
            )));
        }
        let meta = std::fs::metadata(src)
            .map_err(|e| ApiError::invalid(format!("cannot read {}: {e}", src.display())))?;
        let source = if meta.is_dir() {
            ImageSource::Directory {
                path: req.path.clone(),
            }
        } else if meta.is_file() {
            ImageSource::Tarball {
                path: req.path.clone(),
            }
        } else {
            return Err(ApiError::invalid(format!(
                "{} is neither a directory nor a tarball",
                src.display()
            )));
        };

        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.list()?.iter().any(|i| i.name == req.name) {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("an image named {:?} exists already", req.name),
            ));
        }
        let id = alloc::new_id();
        let dest = self.layout.image_dir(&id);
        stage(
            events,
            "import_image",
            format!("importing {}", src.display()),
        );
        let mut on_event = |ev: banger_image::ImportEvent| events(import_event(ev));
        let imported =
            banger_image::import_rootfs(src, &dest, &self.tools.rootfs_worker, &mut on_event)
                .map_err(|e| ApiError::new(import_error_code(&e), chain(&e)))?;
        let record = ImageRecord {
            id: id.clone(),
            name: req.name.clone(),
            source,
            base_path: imported.base_path.display().to_string(),
            work_seed_path: imported.work_seed_dir.display().to_string(),
            size_bytes: imported.size_bytes,
            has_init: imported.has_init,
            config: Default::default(),
            created_at: now_rfc3339(),
        };
        if let Err(e) = self.store.insert_image(&record) {
            remove_any(&dest);
            return Err(store_err(e));
        }
        Ok(record)
    }

    /// Refused while a VM uses the image: its overlay is meaningless
    /// without the base it was written against.
    pub fn remove(&self, reference: &str) -> CoreResult<ImageRecord> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let img = self.get(reference)?;
        let users = self.store.vms_using_image(&img.id).map_err(store_err)?;
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "image {} is used by vm {}; remove those VMs first",
                img.name,
                users.join(", ")
            )));
        }
        let dir = self.layout.image_dir(&img.id);
        let trash = self.layout.tmp_dir().join(format!("image-rm-{}", img.id));
        if dir.exists() {
            std::fs::rename(&dir, &trash)
                .map_err(|e| internal(&format!("cannot remove {}", dir.display()), &e))?;
        }
        if let Err(e) = self.store.delete_image(&img.id) {
            let _ = std::fs::rename(&trash, &dir);
            return Err(store_err(e));
        }
        remove_any(&trash);
        Ok(img)
    }

    pub(crate) fn remove_orphans(&self) {
        if let Ok(list) = self.store.list_images() {
            let known: HashSet<String> = list.into_iter().map(|i| i.id).collect();
            remove_unknown(&self.layout.images_dir(), &known);
        }
    }
}

fn stage_name(stage: banger_image::ImportStage) -> &'static str {
    match stage {
        banger_image::ImportStage::Unpack => "unpack",
        banger_image::ImportStage::BuildBase => "build_base",
        banger_image::ImportStage::WorkSeed => "work_seed",
    }
}

fn import_event(ev: banger_image::ImportEvent) -> banger_api::Event {
    use banger_image::ImportEvent as E;
    match ev {
        E::Stage { stage } => banger_api::Event::Stage {
            stage: stage_name(stage).into(),
            detail: match stage {
                banger_image::ImportStage::Unpack => "unpacking the root filesystem",
                banger_image::ImportStage::BuildBase => "building the read-only base",
                banger_image::ImportStage::WorkSeed => "saving /root as the work seed",
            }
            .into(),
        },
        E::Progress { stage, done, total } => banger_api::Event::Progress {
            stage: stage_name(stage).into(),
            current: done,
            total: Some(total),
        },
    }
}

/// What the user got wrong (a missing or hostile source) versus what broke.
fn import_error_code(e: &banger_image::ImageError) -> ErrorCode {
    use banger_image::ImageError as E;
    match e {
        E::NotFound { .. }
        | E::UnsupportedFormat { .. }
        | E::UnsafeEntry { .. }
        | E::UnsupportedEntry { .. }
        | E::Archive { .. }
        | E::NonUtf8 { .. }
        | E::Worker { .. } => ErrorCode::InvalidArgument,
        _ => ErrorCode::Internal,
    }
}

//! The image registry: a root filesystem (directory or tarball) becomes a
//! read-only ext4 base plus a work seed (`/root` of the image, with its true
//! ownership) that every VM's work disk is built from.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use banger_api::{ImageImportRequest, ImageRecord, ImageSource, PruneReport, validate};
use banger_store::Store;

use crate::error::{CoreError, CoreResult, ErrorKind, chain, classify, is_no_space, store_err};
use crate::events::{EventSink, stage};
use crate::scratch::{remove_any, remove_object, remove_unknown};
use crate::tools::Tools;
use crate::{Layout, alloc, now_rfc3339, resolve};

mod commit;

#[derive(Debug)]
pub struct ImageService {
    layout: Arc<Layout>,
    store: Arc<Store>,
    tools: Tools,
    /// Serialises name checks with publication so two imports cannot both
    /// claim a name; the slow unpack runs under it too, which is acceptable
    /// for a per-user daemon and keeps the disk from filling twice at once.
    lock: Mutex<()>,
    /// Pulls hold it shared from their first download until their image is
    /// recorded; freeing cache blobs holds it exclusively, so a blob a pull
    /// is about to use is never removed under it.
    blob_gate: tokio::sync::RwLock<()>,
}

impl ImageService {
    pub fn new(layout: Arc<Layout>, store: Arc<Store>, tools: Tools) -> Self {
        Self {
            layout,
            store,
            tools,
            lock: Mutex::new(()),
            blob_gate: tokio::sync::RwLock::new(()),
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
        validate::artifact_name(&req.name, "image name").map_err(CoreError::invalid)?;
        let src = Path::new(&req.path);
        if !src.is_absolute() {
            return Err(CoreError::invalid(format!(
                "image path {:?} must be absolute",
                req.path
            )));
        }
        let meta = std::fs::metadata(src)
            .map_err(|e| CoreError::invalid(format!("cannot read {}: {e}", src.display())))?;
        let source = if meta.is_dir() {
            ImageSource::Directory {
                path: req.path.clone(),
            }
        } else if meta.is_file() {
            ImageSource::Tarball {
                path: req.path.clone(),
            }
        } else {
            return Err(CoreError::invalid(format!(
                "{} is neither a directory nor a tarball",
                src.display()
            )));
        };

        self.import_from(src, source, &req.name, events)
    }

    /// Build and record image `name` from the directory or tarball `src`
    /// (a path of the request, or an upload in scratch), with `source` as
    /// where it came from.
    pub(crate) fn import_from(
        &self,
        src: &Path,
        source: ImageSource,
        name: &str,
        events: EventSink<'_>,
    ) -> CoreResult<ImageRecord> {
        validate::artifact_name(name, "image name").map_err(CoreError::invalid)?;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.list()?.iter().any(|i| i.name == name) {
            return Err(CoreError::already_exists(format!(
                "an image named {name:?} exists already"
            )));
        }
        let id = alloc::new_id();
        let dest = self.layout.image_dir(&id);
        let shown = match &source {
            ImageSource::Directory { path } | ImageSource::Tarball { path } => path.clone(),
            _ => src.display().to_string(),
        };
        stage(events, "import_image", format!("importing {shown}"));
        let mut on_event = |ev: banger_image::ImportEvent| events(import_event(ev));
        let imported =
            banger_image::import_rootfs(src, &dest, &self.tools.rootfs_worker, &mut on_event)
                .map_err(|e| classify(&e, import_error_kind(&e), &self.layout.images_dir()))?;
        let record = ImageRecord {
            id: id.clone(),
            name: name.to_string(),
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
        remove_in_background(imported.scratch);
        Ok(record)
    }

    /// Pull `req.reference` from its registry and build an image from it.
    /// Pulling a name whose stored digest is still current is a no-op.
    pub async fn pull(
        &self,
        req: &banger_api::ImagePullRequest,
        events: EventSink<'_>,
    ) -> CoreResult<ImageRecord> {
        let invalid = |e: banger_oci::OciError| CoreError::invalid(chain(&e));
        let reference = banger_oci::parse_reference(&req.reference).map_err(invalid)?;
        let name = match &req.name {
            Some(n) => n.clone(),
            None => default_image_name(&reference),
        };
        validate::artifact_name(&name, "image name").map_err(CoreError::invalid)?;
        let mut options = banger_oci::PullOptions {
            insecure: req.insecure,
            ..Default::default()
        };
        if let Some(p) = &req.platform {
            options.platform = p.parse().map_err(invalid)?;
        }
        options.credentials = match (&req.username, &req.password) {
            (Some(u), Some(p)) => banger_oci::Credentials::Basic {
                username: u.clone(),
                password: p.clone(),
            },
            (None, None) => banger_oci::default_docker_config()
                .map(banger_oci::Credentials::docker_config)
                .unwrap_or_default(),
            _ => {
                return Err(CoreError::invalid(
                    "give both a username and a password, or neither",
                ));
            }
        };

        stage(events, "resolve", format!("resolving {}", req.reference));
        let resolved = banger_oci::resolve(&req.reference, &options)
            .await
            .map_err(|e| pull_error(&e, &self.layout.blobs_dir()))?;
        if let Some(existing) = self.list()?.into_iter().find(|i| i.name == name) {
            return match &existing.source {
                ImageSource::Registry { digest, .. } if *digest == resolved.manifest_digest => {
                    events(banger_api::Event::Message {
                        text: format!("{name} is up to date ({digest})"),
                    });
                    Ok(existing)
                }
                _ => Err(CoreError::already_exists(format!(
                    "an image named {name:?} exists already with other content; remove it or pull with --name"
                ))),
            };
        }

        let _pulling = self.blob_gate.read().await;
        let cache = self.blob_cache()?;
        stage(
            events,
            "download",
            format!("pulling {}", resolved.reference),
        );
        let last = Mutex::new(std::time::Instant::now());
        let on_pull = |ev: banger_oci::PullEvent| {
            if let banger_oci::PullEvent::Progress { done, total } = ev {
                // An event per chunk would flood the client: ten a second.
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= std::time::Duration::from_millis(100) || done == total {
                    *last = std::time::Instant::now();
                    events(banger_api::Event::Progress {
                        stage: "download".into(),
                        current: done,
                        total: Some(total),
                    });
                }
            }
        };
        let pulled = banger_oci::pull(&req.reference, &options, &cache, &on_pull)
            .await
            .map_err(|e| pull_error(&e, &self.layout.blobs_dir()))?;
        tokio::task::block_in_place(|| self.publish_pulled(&name, &pulled, events))
    }

    /// Build and record an image from pulled layers, under the registry lock.
    fn publish_pulled(
        &self,
        name: &str,
        pulled: &banger_oci::PulledImage,
        events: EventSink<'_>,
    ) -> CoreResult<ImageRecord> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.list()?.iter().any(|i| i.name == name) {
            return Err(CoreError::already_exists(format!(
                "an image named {name:?} was created meanwhile"
            )));
        }
        let id = alloc::new_id();
        let dest = self.layout.image_dir(&id);
        let layers: Vec<_> = pulled
            .layers
            .iter()
            .map(|l| (l.path.clone(), l.compression))
            .collect();
        let mut on_event = |ev: banger_image::ImportEvent| events(import_event(ev));
        let imported =
            banger_image::import_layers(&layers, &dest, &self.tools.rootfs_worker, &mut on_event)
                .map_err(|e| {
                // The worker names layers by index; the user knows digests.
                let mut msg = chain(&e);
                for (i, l) in pulled.layers.iter().enumerate().rev() {
                    msg = msg.replace(
                        &format!("layer {i}:"),
                        &format!("layer {i} ({}):", l.digest),
                    );
                }
                if is_no_space(&e) {
                    return CoreError::no_space(self.layout.images_dir().display());
                }
                CoreError::new(import_error_kind(&e), msg)
            })?;
        let c = &pulled.config;
        let record = ImageRecord {
            id,
            name: name.to_string(),
            source: ImageSource::Registry {
                reference: pulled.reference.clone(),
                digest: pulled.manifest_digest.clone(),
            },
            base_path: imported.base_path.display().to_string(),
            work_seed_path: imported.work_seed_dir.display().to_string(),
            size_bytes: imported.size_bytes,
            has_init: imported.has_init,
            config: banger_api::ImageConfig {
                env: c.env.clone(),
                working_dir: c.working_dir.clone(),
                user: c.user.clone(),
                entrypoint: c.entrypoint.clone(),
                cmd: c.cmd.clone(),
            },
            created_at: now_rfc3339(),
        };
        if let Err(e) = self
            .store
            .insert_image_with_blobs(&record, &pulled.blob_digests())
        {
            remove_any(&dest);
            return Err(store_err(e));
        }
        remove_in_background(imported.scratch);
        Ok(record)
    }

    fn blob_cache(&self) -> CoreResult<banger_oci::BlobCache> {
        let dir = self.layout.blobs_dir();
        banger_oci::BlobCache::open(&dir).map_err(|e| classify(&e, ErrorKind::Internal, &dir))
    }

    /// Remove every cache blob no image was built from, and downloads
    /// abandoned by interrupted pulls. Waits for running pulls to finish.
    pub async fn prune(&self) -> CoreResult<PruneReport> {
        let _exclusive = self.blob_gate.write().await;
        tokio::task::block_in_place(|| {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let keep = self.store.referenced_blobs().map_err(store_err)?;
            let report = self
                .blob_cache()?
                .prune(&keep)
                .map_err(|e| CoreError::internal(chain(&e)))?;
            Ok(PruneReport {
                blobs_removed: report.blobs_removed,
                bytes_freed: report.bytes_freed,
            })
        })
    }

    /// Free the blobs `blobs` names that no remaining image uses. Skipped
    /// while a pull runs (it may be about to use one); `prune` catches up.
    fn free_unshared_blobs(&self, image: &str, blobs: &[String]) {
        if blobs.is_empty() {
            return;
        }
        let Ok(_exclusive) = self.blob_gate.try_write() else {
            tracing::info!(
                image,
                "a pull is running; leaving its blobs for image prune"
            );
            return;
        };
        let freed = self
            .store
            .referenced_blobs()
            .map_err(store_err)
            .and_then(|keep| {
                let unshared = blobs.iter().filter(|d| !keep.contains(*d));
                self.blob_cache()?
                    .remove_blobs(unshared)
                    .map_err(|e| CoreError::internal(chain(&e)))
            });
        match freed {
            Ok(r) => tracing::info!(
                image,
                blobs = r.blobs_removed,
                bytes = r.bytes_freed,
                "freed cache blobs"
            ),
            // The image is gone already; a blob left behind costs only space.
            Err(e) => tracing::warn!(image, error = %e, "cannot free cache blobs"),
        }
    }

    /// Refused while a VM uses the image: its overlay is meaningless
    /// without the base it was written against.
    pub fn remove(&self, reference: &str) -> CoreResult<ImageRecord> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let img = self.get(reference)?;
        let users = self.store.vms_using_image(&img.id).map_err(store_err)?;
        if !users.is_empty() {
            return Err(CoreError::conflict(format!(
                "image {} is used by vm {}; remove those VMs first",
                img.name,
                users.join(", ")
            )));
        }
        // The rows go with the image (ON DELETE CASCADE): read them first.
        let blobs = self.store.image_blobs(&img.id).map_err(store_err)?;
        remove_object(
            &self.layout,
            &self.layout.image_dir(&img.id),
            "image",
            || self.store.delete_image(&img.id),
        )?;
        self.free_unshared_blobs(&img.name, &blobs);
        Ok(img)
    }

    pub(crate) fn remove_orphans(&self) {
        if let Ok(list) = self.store.list_images() {
            let known: HashSet<String> = list.into_iter().map(|i| i.id).collect();
            remove_unknown(&self.layout.images_dir(), &known);
            banger_image::remove_stale_memory_staging(&self.layout.images_dir());
        }
    }
}

/// The unpacked tree an import is done with: removing it takes seconds
/// for a big image and nothing waits on it. If the daemon exits first, the
/// start-up sweep of the images directory removes it.
fn remove_in_background(scratch: Option<Arc<banger_image::Scratch>>) {
    if let Some(s) = scratch {
        std::thread::spawn(move || drop(s));
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

/// What the user got wrong (a missing, corrupt or hostile source) versus
/// what broke on our side (mkfs, the worker's writes, a missing tool).
fn import_error_kind(e: &banger_image::ImageError) -> ErrorKind {
    if e.is_input_error() {
        ErrorKind::InvalidArgument
    } else {
        ErrorKind::Internal
    }
}

/// `docker.io/library/debian:bookworm` -> `debian:bookworm`; a digest-only
/// reference keeps the first 12 hex digits as its tag.
fn default_image_name(r: &oci_client::Reference) -> String {
    let repo = r
        .repository()
        .rsplit('/')
        .next()
        .unwrap_or("image")
        .to_ascii_lowercase();
    let tag = match (r.tag(), r.digest()) {
        (Some(t), _) => t.to_ascii_lowercase(),
        (None, Some(d)) => d.trim_start_matches("sha256:").chars().take(12).collect(),
        (None, None) => "latest".into(),
    };
    let mut name = format!("{repo}:{tag}");
    name.truncate(63);
    name
}

/// What the user can fix (a bad reference, platform or credentials) versus
/// what broke.
fn pull_error(e: &banger_oci::OciError, blobs_dir: &Path) -> CoreError {
    use banger_oci::OciError as O;
    let code = match e {
        O::BadReference { .. }
        | O::BadPlatform { .. }
        | O::NoMatchingPlatform { .. }
        | O::PlatformMismatch { .. }
        | O::Auth { .. }
        | O::CredentialHelper { .. }
        | O::DockerConfig { .. } => ErrorKind::InvalidArgument,
        _ => ErrorKind::Internal,
    };
    classify(e, code, blobs_dir)
}

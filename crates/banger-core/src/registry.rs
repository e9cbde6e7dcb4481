//! Kernels and images as the daemon's routes see them: list, show,
//! import, pull, remove, prune and the catalog, each one call on the
//! service that owns it.

use banger_api::{
    ImageImportRequest, ImagePullRequest, ImageRecord, KernelCatalogEntry, KernelImportRequest,
    KernelPullRequest, KernelRecord, PruneReport,
};

use crate::Services;
use crate::error::CoreResult;
use crate::events::EventSink;

impl Services {
    pub fn list_kernels(&self) -> CoreResult<Vec<KernelRecord>> {
        self.kernels.list()
    }

    pub fn show_kernel(&self, reference: &str) -> CoreResult<KernelRecord> {
        self.kernels.get(reference)
    }

    pub fn import_kernel(
        &self,
        req: &KernelImportRequest,
        events: EventSink<'_>,
    ) -> CoreResult<KernelRecord> {
        self.kernels.import(req, events)
    }

    /// The kernels `kernel pull` knows: shipped entries and the config's.
    pub fn kernel_catalog(&self) -> Vec<KernelCatalogEntry> {
        crate::kernel_pull::catalog(&self.config)
    }

    pub async fn pull_kernel(
        &self,
        req: &KernelPullRequest,
        events: EventSink<'_>,
    ) -> CoreResult<KernelRecord> {
        self.kernels
            .pull(req, &self.config, &self.layout, events)
            .await
    }

    pub fn remove_kernel(&self, reference: &str) -> CoreResult<KernelRecord> {
        self.kernels.remove(reference)
    }

    pub fn set_default_kernel(&self, reference: &str) -> CoreResult<KernelRecord> {
        self.kernels.set_default(reference)
    }

    pub fn list_images(&self) -> CoreResult<Vec<ImageRecord>> {
        self.images.list()
    }

    pub fn show_image(&self, reference: &str) -> CoreResult<ImageRecord> {
        self.images.get(reference)
    }

    pub fn import_image(
        &self,
        req: &ImageImportRequest,
        events: EventSink<'_>,
    ) -> CoreResult<ImageRecord> {
        self.images.import(req, events)
    }

    pub async fn pull_image(
        &self,
        req: &ImagePullRequest,
        events: EventSink<'_>,
    ) -> CoreResult<ImageRecord> {
        self.images.pull(req, events).await
    }

    pub async fn prune_images(&self) -> CoreResult<PruneReport> {
        self.images.prune().await
    }

    pub fn remove_image(&self, reference: &str) -> CoreResult<ImageRecord> {
        self.images.remove(reference)
    }
}

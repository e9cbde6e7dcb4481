//! One lock per snapshot: a restore reads it (shared), `snapshot rm` takes
//! it exclusively and refuses rather than wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One lock per snapshot: a restore reads it (shared), `snapshot rm`
/// takes it exclusively and refuses rather than wait.
#[derive(Debug, Default)]
pub struct SnapshotLocks(Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>);

impl SnapshotLocks {
    pub(super) fn of(&self, id: &str) -> Arc<tokio::sync::RwLock<()>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone()
    }
}

//! What every handler shares: the services (the action surface), the
//! daemon's own description, and the stop signal.

use std::path::PathBuf;
use std::sync::Arc;

use banger_api::{API_VERSION, DaemonInfo};
use banger_core::Services;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct State {
    pub(crate) services: Arc<Services>,
    pub(crate) info: Arc<DaemonInfo>,
    pub(crate) stop: Arc<Notify>,
}

impl State {
    pub fn new(services: Arc<Services>, socket: PathBuf) -> Self {
        let info = DaemonInfo {
            api_version: API_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            socket: socket.display().to_string(),
            data_dir: services.data_dir().display().to_string(),
            started_at: banger_core::now_rfc3339(),
        };
        Self {
            services,
            info: Arc::new(info),
            stop: Arc::new(Notify::new()),
        }
    }

    pub fn stop_signal(&self) -> Arc<Notify> {
        self.stop.clone()
    }
}

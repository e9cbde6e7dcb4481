//! The route table: every endpoint banger-api declares, each given to one
//! handler that makes one call on [`banger_core::Services`], the daemon's
//! action surface. No decisions are made here. The streaming routes
//! (console, exec, tcp, files) have their handlers in `stream.rs` and
//! `exec.rs`.
//!
//! Long operations stream NDJSON events when the client sends `Accept:
//! application/x-ndjson`; otherwise they run to the end and answer plain
//! JSON, which keeps `curl --unix-socket` usable.

use std::time::Duration;

use axum::Router;
use banger_api::endpoints::*;
use banger_api::{ApiError, DaemonStopReply, Event, VmStopRequest};

use crate::reply::{Events, Failure, blocking};
use crate::routes::Routes;
use crate::state::State;

/// The longest clean shutdown `vm stop` waits for: a day.
const MAX_STOP_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// How long `vm stop` waits for a clean shutdown (by default
/// `DEFAULT_STOP_TIMEOUT`); more than a day is refused.
fn stop_timeout(b: &VmStopRequest) -> Result<Duration, ApiError> {
    match b.timeout_secs {
        None => Ok(banger_core::boot::DEFAULT_STOP_TIMEOUT),
        Some(s) if s <= MAX_STOP_TIMEOUT_SECS => Ok(Duration::from_secs(s)),
        Some(s) => Err(ApiError::invalid(format!(
            "timeout_secs {s} is more than a day ({MAX_STOP_TIMEOUT_SECS})"
        ))),
    }
}

/// An event sink over a long operation's channel.
fn sink(events: &Events) -> impl Fn(Event) + Send + Sync + '_ {
    move |ev| {
        let _ = events.send(ev);
    }
}

pub fn router(state: State) -> Router {
    routes().finish(state)
}

/// Every declared endpoint with its handler.
pub(crate) fn routes() -> Routes {
    Routes::new()
        // The daemon.
        .json::<Version, _, _>(|s, _| async move { Ok((*s.info).clone()) })
        .json::<DaemonStop, _, _>(|s, _| async move {
            // notify_one stores a permit, so the stop is not lost if the
            // server task has not started waiting yet.
            s.stop.notify_one();
            Ok(DaemonStopReply { stopping: true })
        })
        .json::<Config, _, _>(|s, _| async move { Ok(s.services.config_reply()) })
        .json::<OpenApi, _, _>(|_, _| async move {
            serde_json::to_value(crate::openapi::document())
                .map_err(|e| Failure(ApiError::internal(format!("encode the document: {e}"))))
        })
        // Kernels.
        .json::<KernelsList, _, _>(|s, _| blocking(move || s.services.list_kernels()))
        .events::<KernelsImport, _, _>(|s, c, ev| {
            blocking(move || s.services.import_kernel(&c.body, &sink(&ev)))
        })
        .json::<KernelsCatalog, _, _>(|s, _| async move { Ok(s.services.kernel_catalog()) })
        .events::<KernelsPull, _, _>(|s, c, ev| async move {
            Ok(s.services.pull_kernel(&c.body, &sink(&ev)).await?)
        })
        .json::<KernelsShow, _, _>(|s, c| blocking(move || s.services.show_kernel(&c.reference())))
        .json::<KernelsRm, _, _>(|s, c| blocking(move || s.services.remove_kernel(&c.reference())))
        .json::<KernelsDefault, _, _>(|s, c| {
            blocking(move || s.services.set_default_kernel(&c.reference()))
        })
        // Images.
        .json::<ImagesList, _, _>(|s, _| blocking(move || s.services.list_images()))
        .events::<ImagesImport, _, _>(|s, c, ev| {
            blocking(move || s.services.import_image(&c.body, &sink(&ev)))
        })
        .events::<ImagesPull, _, _>(|s, c, ev| async move {
            Ok(s.services.pull_image(&c.body, &sink(&ev)).await?)
        })
        .json::<ImagesPrune, _, _>(|s, _| async move { Ok(s.services.prune_images().await?) })
        .events::<ImagesCommit, _, _>(|s, c, ev| async move {
            Ok(s.services.commit_image(&c.body, &sink(&ev)).await?)
        })
        .json::<ImagesShow, _, _>(|s, c| blocking(move || s.services.show_image(&c.reference())))
        .json::<ImagesRm, _, _>(|s, c| blocking(move || s.services.remove_image(&c.reference())))
        // VMs.
        .json::<VmsList, _, _>(|s, _| async move { Ok(s.services.list_vms().await?) })
        .events::<VmsCreate, _, _>(|s, c, ev| {
            blocking(move || s.services.create_vm(&c.body, &sink(&ev)))
        })
        .json::<VmsShow, _, _>(|s, c| async move { Ok(s.services.show_vm(&c.reference()).await?) })
        .json::<VmsSet, _, _>(|s, c| async move {
            Ok(s.services.set_vm(&c.reference(), &c.body).await?)
        })
        .json::<VmsRm, _, _>(|s, c| async move {
            Ok(s.services.remove_vm(&c.reference(), c.query.force).await?)
        })
        .events::<VmsStart, _, _>(|s, c, ev| async move {
            Ok(s.services
                .start_vm(&c.reference(), c.body.cold, &sink(&ev))
                .await?)
        })
        .events::<VmsStop, _, _>(|s, c, _| async move {
            Ok(s.services
                .stop_vm(&c.reference(), stop_timeout(&c.body)?)
                .await?)
        })
        .events::<VmsRestart, _, _>(|s, c, ev| async move {
            Ok(s.services
                .restart_vm(&c.reference(), stop_timeout(&c.body)?, &sink(&ev))
                .await?)
        })
        .json::<VmsKill, _, _>(|s, c| async move { Ok(s.services.kill_vm(&c.reference()).await?) })
        .json::<VmsPause, _, _>(
            |s, c| async move { Ok(s.services.pause_vm(&c.reference()).await?) },
        )
        .json::<VmsResume, _, _>(
            |s, c| async move { Ok(s.services.resume_vm(&c.reference()).await?) },
        )
        .json::<VmsSuspend, _, _>(
            |s, c| async move { Ok(s.services.suspend_vm(&c.reference()).await?) },
        )
        .events::<VmsRebase, _, _>(|s, c, ev| async move {
            Ok(s.services
                .rebase_vm(&c.reference(), &c.body, &sink(&ev))
                .await?)
        })
        .raw::<VmsLogs, _, _>(crate::stream::vms_logs)
        .raw::<VmsExec, _, _>(crate::exec::vms_exec)
        .raw::<VmsTcp, _, _>(crate::stream::vms_tcp)
        .raw::<VmsCopyIn, _, _>(crate::stream::vms_copy_in)
        .raw::<VmsCopyOut, _, _>(crate::stream::vms_copy_out)
        .json::<VmsPorts, _, _>(
            |s, c| async move { Ok(s.services.vm_ports(&c.reference()).await?) },
        )
        .json::<VmsStats, _, _>(
            |s, c| async move { Ok(s.services.vm_stats(&c.reference()).await?) },
        )
        // Snapshots and boot templates.
        .events::<VmsSnapshot, _, _>(|s, c, ev| async move {
            Ok(s.services
                .snapshot_vm(&c.reference(), &c.body, &sink(&ev))
                .await?)
        })
        .events::<VmsFork, _, _>(|s, c, ev| async move {
            Ok(s.services
                .fork_vm(&c.reference(), &c.body, &sink(&ev))
                .await?)
        })
        .json::<SnapshotsList, _, _>(|s, _| blocking(move || s.services.list_snapshots()))
        .json::<SnapshotsShow, _, _>(|s, c| {
            blocking(move || s.services.show_snapshot(&c.reference()))
        })
        .json::<SnapshotsRm, _, _>(|s, c| async move {
            Ok(s.services.remove_snapshot(&c.reference()).await?)
        })
        .events::<SnapshotsRestore, _, _>(|s, c, ev| async move {
            Ok(s.services
                .restore_snapshot(&c.reference(), &c.body, &sink(&ev))
                .await?)
        })
        .json::<TemplatesList, _, _>(|s, _| async move {
            Ok(tokio::task::block_in_place(|| s.services.templates()))
        })
        .json::<TemplatesMake, _, _>(|s, c| async move { Ok(s.services.warm(&c.body).await?) })
        // For clients on another host.
        .raw::<ImagesUpload, _, _>(crate::upload::images_upload)
        .raw::<KernelsUpload, _, _>(crate::upload::kernels_upload)
        .json::<VmsSsh, _, _>(|s, c| blocking(move || s.services.vm_ssh_access(&c.reference())))
}

//! Handlers of the routes a client on another host uses instead of
//! naming a path: `POST /v1/images/upload` and `POST /v1/kernels/upload`
//! receive the body into an upload scratch directory, then import it as a
//! long operation (events when asked). A body that breaks off is an
//! `invalid_argument` and leaves nothing: the scratch goes with the call.

use std::path::Path;

use axum::body::Body;
use axum::extract::Request;
use banger_api::ApiError;
use banger_api::endpoints::{ImagesUpload, KernelsUpload};
use banger_core::error::internal;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::reply::{Failure, Reply, blocking, long_op, wants_stream};
use crate::routes::Call;
use crate::state::State;

/// Write the request body to `path`, as it arrives.
async fn receive(body: Body, path: &Path) -> Result<u64, Failure> {
    let io = |what: &str, e: std::io::Error| Failure(internal(what, &e).into());
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| io("create the upload file", e))?;
    let mut chunks = body.into_data_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = chunks.next().await {
        let data = chunk.map_err(|e| {
            Failure(ApiError::invalid(format!(
                "the upload broke off after {bytes} bytes: {e}"
            )))
        })?;
        bytes += data.len() as u64;
        file.write_all(&data)
            .await
            .map_err(|e| io("write the upload", e))?;
    }
    file.flush().await.map_err(|e| io("write the upload", e))?;
    Ok(bytes)
}

pub(crate) async fn images_upload(s: State, c: Call<ImagesUpload>, req: Request) -> Reply {
    let upload = s.services.upload()?;
    receive(req.into_body(), &upload.file()).await?;
    long_op(wants_stream(&c.headers), move |events| async move {
        blocking(move || {
            let sink = |ev| {
                let _ = events.send(ev);
            };
            s.services.import_uploaded_image(upload, &c.query, &sink)
        })
        .await
    })
    .await
}

pub(crate) async fn kernels_upload(s: State, c: Call<KernelsUpload>, req: Request) -> Reply {
    let upload = s.services.upload()?;
    receive(req.into_body(), &upload.file()).await?;
    long_op(wants_stream(&c.headers), move |events| async move {
        blocking(move || {
            let sink = |ev| {
                let _ = events.send(ev);
            };
            s.services.import_uploaded_kernel(upload, &c.query, &sink)
        })
        .await
    })
    .await
}

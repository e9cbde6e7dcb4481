//! What every kind of record (VM, image, kernel) does the same way: a long
//! create with a progress display, `show`, and removing several at once.

use std::process::ExitCode;

use anyhow::Result;
use hyper::http::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{self, Client, seg};
use crate::cmd::Ref;
use crate::output::{self, Progress};

/// Run a long operation with a progress display, then print the resulting
/// object as JSON or just its name.
pub async fn create_and_print<T, B>(
    path: &str,
    body: &B,
    json: bool,
    name: impl Fn(&T) -> &str,
) -> Result<()>
where
    T: DeserializeOwned + Serialize,
    B: Serialize,
{
    let c = client::daemon().await?;
    let p = Progress::new();
    let obj: T = c.stream(Method::POST, path, body, |e| p.event(e)).await?;
    drop(p);
    if json {
        output::json(&obj)?;
    } else {
        println!("{}", name(&obj));
    }
    Ok(())
}

/// `GET /v1/{kind}/{ref}` for `show`: with `--json` the record is printed
/// here and `None` returned; otherwise the caller prints it for humans.
pub async fn fetch_for_show<T: DeserializeOwned + Serialize>(
    kind: &str,
    r: &Ref,
) -> Result<Option<T>> {
    let c = client::daemon().await?;
    let record: T = c
        .call(
            Method::GET,
            &format!("/v1/{kind}/{}", seg(&r.reference)),
            None::<&()>,
        )
        .await?;
    if r.json {
        output::json(&record)?;
        return Ok(None);
    }
    Ok(Some(record))
}

/// Remove each reference, reporting every failure; non-zero if any failed.
/// `query` is appended to each DELETE (e.g. `?force=true`).
pub async fn remove_each(c: &Client, kind: &str, refs: &[String], query: &str) -> Result<ExitCode> {
    let mut failed = false;
    for r in refs {
        let res: Result<serde_json::Value> = c
            .call(
                Method::DELETE,
                &format!("/v1/{kind}/{}{query}", seg(r)),
                None::<&()>,
            )
            .await;
        match res {
            Ok(v) => println!("{}", v["name"].as_str().unwrap_or(r)),
            Err(e) => {
                eprintln!("banger: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

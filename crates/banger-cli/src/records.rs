//! What every kind of record (VM, image, kernel, snapshot) does the same
//! way: a long create with a progress display, `show`, and removing
//! several at once.

use std::process::ExitCode;

use anyhow::Result;
use banger_api::Endpoint;
use serde::Serialize;

use crate::args::Ref;
use crate::client::{self, Client};
use crate::output::{self, Progress};

/// Run the long operation `E` with a progress display, then print the
/// resulting object as JSON or just its name.
pub async fn create_and_print<E: Endpoint>(
    params: &[&str],
    body: &E::Request,
    json: bool,
    name: impl Fn(&E::Response) -> &str,
) -> Result<()> {
    let c = client::daemon().await?;
    let p = Progress::new();
    let obj = c.stream::<E>(params, body, |e| p.event(e)).await?;
    drop(p);
    print_created(&obj, json, name(&obj))
}

/// A new object as JSON, or just its name.
pub fn print_created<T: Serialize>(obj: &T, json: bool, name: &str) -> Result<()> {
    if json {
        output::json(obj)?;
    } else {
        println!("{name}");
    }
    Ok(())
}

/// The record `r` names, for `show`: with `--json` it is printed here and
/// `None` returned; otherwise the caller prints it for humans.
pub async fn fetch_for_show<E: Endpoint<Request = ()>>(r: &Ref) -> Result<Option<E::Response>>
where
    E::Response: Serialize,
{
    let c = client::daemon().await?;
    let record = c.call::<E>(&[&r.reference], &()).await?;
    if r.json {
        output::json(&record)?;
        return Ok(None);
    }
    Ok(Some(record))
}

/// Remove each reference with `E` (and `query`), reporting every failure;
/// non-zero if any failed.
pub async fn remove_each<E: Endpoint<Request = ()>>(
    c: &Client,
    refs: &[String],
    query: &E::Query,
    name: impl Fn(&E::Response) -> &str,
) -> Result<ExitCode> {
    let mut failed = false;
    for r in refs {
        match c.call_with::<E>(&[r], query, &()).await {
            Ok(v) => println!("{}", name(&v)),
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

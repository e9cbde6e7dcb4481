//! `banger image`: pull, import, commit, list, show, remove, prune.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use banger_api::NoQuery;
use banger_api::endpoints::{
    ImagesCommit, ImagesImport, ImagesList, ImagesPrune, ImagesPull, ImagesRm, ImagesShow,
};
use banger_api::{ImageImportRequest, ImageRecord, ImageSource};
use clap::Subcommand;

use crate::args::{JsonFlag, Ref};
use crate::client;
use crate::input::absolute;
use crate::output;
use crate::records::{create_and_print, fetch_for_show, print_created, remove_each};

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Pull an image from an OCI or Docker v2 registry
    Pull {
        /// e.g. debian:bookworm, ghcr.io/org/app:1.2, 127.0.0.1:5000/x:y
        reference: String,
        /// Name in banger (default: repository and tag, e.g. debian:bookworm)
        #[arg(long)]
        name: Option<String>,
        /// os/arch[/variant] (default linux/amd64)
        #[arg(long)]
        platform: Option<String>,
        /// Allow plain HTTP to a registry that is not on loopback
        #[arg(long)]
        insecure: bool,
        /// Registry user; the password is read from stdin (--password-stdin)
        #[arg(long, requires = "password_stdin")]
        username: Option<String>,
        #[arg(long, requires = "username")]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
    /// Import a root filesystem directory or tarball (.tar, .tar.gz, .tar.zst)
    Import {
        path: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Make an image from a running VM: its root filesystem as it is now,
    /// and its /root as the new image's work seed (like `docker commit`)
    Commit {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        vm: String,
        name: String,
        #[arg(long)]
        json: bool,
    },
    #[command(alias = "list")]
    Ls(JsonFlag),
    Show(Ref),
    /// Remove images; cache blobs no other image uses are freed
    #[command(alias = "delete")]
    Rm {
        #[arg(required = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        references: Vec<String>,
    },
    /// Free every cache blob no image uses (and abandoned downloads)
    Prune(JsonFlag),
}

pub async fn run(cmd: ImageCmd) -> Result<ExitCode> {
    match cmd {
        ImageCmd::Pull {
            reference,
            name,
            platform,
            insecure,
            username,
            password_stdin,
            json,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim_end_matches(['\n', '\r']).to_string())
            } else {
                None
            };
            let req = banger_api::ImagePullRequest {
                reference,
                name,
                platform,
                insecure,
                username,
                password,
            };
            create_and_print::<ImagesPull>(&[], &req, json, |i| &i.name).await?;
        }
        ImageCmd::Import { path, name, json } => {
            banger_api::validate::artifact_name(&name, "image name").map_err(|e| anyhow!(e))?;
            if let client::Host::Ssh(_) = client::host()? {
                // The daemon cannot read this host's path: send the files.
                let c = client::daemon().await?;
                let image = crate::upload::image(&c, &path, &name).await?;
                print_created(&image, json, &image.name)?;
                return Ok(ExitCode::SUCCESS);
            }
            let req = ImageImportRequest {
                path: absolute(&path)?,
                name,
            };
            create_and_print::<ImagesImport>(&[], &req, json, |i| &i.name).await?;
        }
        ImageCmd::Commit { vm, name, json } => {
            banger_api::validate::artifact_name(&name, "image name").map_err(|e| anyhow!(e))?;
            let req = banger_api::ImageCommitRequest { vm, name };
            create_and_print::<ImagesCommit>(&[], &req, json, |i| &i.name).await?;
        }
        ImageCmd::Ls(f) => {
            let c = client::daemon().await?;
            let imgs = c.call::<ImagesList>(&[], &()).await?;
            if f.json {
                output::json(&imgs)?;
            } else {
                let rows: Vec<Vec<String>> = imgs
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.id[..12].to_string(),
                            digest_text(&i.source, true),
                            banger_api::size::human(i.size_bytes),
                            if i.has_init { "yes" } else { "no" }.to_string(),
                            source_text(&i.source),
                            i.created_at.clone(),
                        ]
                    })
                    .collect();
                output::table(
                    &["NAME", "ID", "DIGEST", "SIZE", "INIT", "SOURCE", "CREATED"],
                    &rows,
                );
            }
        }
        ImageCmd::Show(r) => {
            let Some(i) = fetch_for_show::<ImagesShow>(&r).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            show_image(&i);
        }
        ImageCmd::Rm { references } => {
            let c = client::daemon().await?;
            return remove_each::<ImagesRm>(&c, &references, &NoQuery {}, |i| &i.name).await;
        }
        ImageCmd::Prune(f) => {
            let c = client::daemon().await?;
            let r = c.call::<ImagesPrune>(&[], &()).await?;
            if f.json {
                output::json(&r)?;
            } else {
                println!(
                    "removed {} blob{}, freed {}",
                    r.blobs_removed,
                    if r.blobs_removed == 1 { "" } else { "s" },
                    banger_api::size::human(r.bytes_freed)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show_image(i: &ImageRecord) {
    output::fields(&[
        ("name", i.name.clone()),
        ("id", i.id.clone()),
        ("source", source_text(&i.source)),
        ("digest", digest_text(&i.source, false)),
        ("size", banger_api::size::human(i.size_bytes)),
        (
            "init",
            if i.has_init {
                "yes"
            } else {
                "no (the banger agent stays PID 1)"
            }
            .to_string(),
        ),
        ("entrypoint", argv_text(&i.config.entrypoint)),
        ("cmd", argv_text(&i.config.cmd)),
        (
            "user",
            i.config
                .user
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "root".into()),
        ),
        (
            "workdir",
            i.config
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/root".into()),
        ),
        ("env", argv_text(&i.config.env)),
        ("base", i.base_path.clone()),
        ("work seed", i.work_seed_path.clone()),
        ("created", i.created_at.clone()),
    ]);
}

fn source_text(s: &ImageSource) -> String {
    match s {
        ImageSource::Directory { path } => format!("dir {path}"),
        ImageSource::Tarball { path } => format!("tar {path}"),
        ImageSource::Registry { reference, .. } => reference.clone(),
        ImageSource::Commit {
            vm_name,
            parent_image_name,
            ..
        } => format!("commit of vm {vm_name} (on {parent_image_name})"),
        ImageSource::Unknown => "-".to_string(),
    }
}

/// The manifest digest of a pulled image, `-` for a local one.
fn digest_text(s: &ImageSource, short: bool) -> String {
    match s {
        ImageSource::Registry { digest, .. } if short => {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            hex.chars().take(12).collect()
        }
        ImageSource::Registry { digest, .. } => digest.clone(),
        _ => "-".to_string(),
    }
}

/// An argv list as a shell would read it back, `-` when empty.
fn argv_text(argv: &[String]) -> String {
    if argv.is_empty() {
        return "-".to_string();
    }
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| format!("{argv:?}"))
}

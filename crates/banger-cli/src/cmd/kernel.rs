//! `banger kernel`: import, pull from the catalog, list, show (with what
//! each VMM can boot), remove, and the default for new VMs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use banger_api::KernelImportRequest;
use banger_api::NoQuery;
use banger_api::endpoints::{
    KernelsCatalog, KernelsDefault, KernelsImport, KernelsList, KernelsPull, KernelsRm, KernelsShow,
};
use clap::Subcommand;

use crate::args::{JsonFlag, Ref};
use crate::client;
use crate::input::absolute;
use crate::output;
use crate::records::{create_and_print, fetch_for_show, print_created, remove_each};

#[derive(Subcommand, Debug)]
pub enum KernelCmd {
    /// Import a kernel image (bzImage or vmlinux), or a linux-image-*.deb with --deb
    Import {
        path: PathBuf,
        #[arg(long)]
        initrd: Option<PathBuf>,
        #[arg(long)]
        name: Option<String>,
        /// PATH is a Debian linux-image package: import its kernel and modules
        #[arg(long)]
        deb: bool,
        #[arg(long)]
        json: bool,
    },
    #[command(alias = "list")]
    Ls(JsonFlag),
    Show(Ref),
    #[command(alias = "delete")]
    Rm {
        #[arg(required = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        references: Vec<String>,
    },
    /// Make a kernel the default for new VMs
    Default {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        reference: String,
    },
    /// Download a kernel from the catalog, check its SHA-256, import it
    Pull {
        /// Catalog entry (`banger kernel catalog`)
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        entry: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the kernels `kernel pull` can fetch
    Catalog(JsonFlag),
}

pub async fn run(cmd: KernelCmd) -> Result<ExitCode> {
    match cmd {
        KernelCmd::Import {
            path,
            initrd,
            name,
            deb,
            json,
        } => {
            if let Some(n) = &name {
                banger_api::validate::artifact_name(n, "kernel name").map_err(|e| anyhow!(e))?;
            }
            if let client::Host::Ssh(_) = client::host()? {
                // The daemon cannot read this host's paths: send the files.
                let c = client::daemon().await?;
                let k = crate::upload::kernel(&c, &path, initrd.as_deref(), name, deb).await?;
                print_created(&k, json, &k.name)?;
                return Ok(ExitCode::SUCCESS);
            }
            let req = KernelImportRequest {
                path: absolute(&path)?,
                initrd: initrd.as_deref().map(absolute).transpose()?,
                name,
                deb,
            };
            create_and_print::<KernelsImport>(&[], &req, json, |k| &k.name).await?;
        }
        KernelCmd::Ls(f) => {
            let c = client::daemon().await?;
            let ks = c.call::<KernelsList>(&[], &()).await?;
            if f.json {
                output::json(&ks)?;
            } else {
                let rows: Vec<Vec<String>> = ks
                    .iter()
                    .map(|k| {
                        vec![
                            k.name.clone(),
                            k.id[..12].to_string(),
                            k.release.clone().unwrap_or_else(|| "-".into()),
                            if k.modules_path.is_some() {
                                "yes"
                            } else {
                                "no"
                            }
                            .to_string(),
                            if k.is_default { "*" } else { "" }.to_string(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "ID", "RELEASE", "MODULES", "DEFAULT"], &rows);
            }
        }
        KernelCmd::Show(r) => {
            let Some(k) = fetch_for_show::<KernelsShow>(&r).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            output::fields(&[
                ("name", k.name.clone()),
                ("id", k.id.clone()),
                (
                    "release",
                    k.release.clone().unwrap_or_else(|| "unknown".into()),
                ),
                ("kernel", k.kernel_path.clone()),
                (
                    "initrd",
                    k.initrd_path.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "modules",
                    k.modules_path.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "vmlinux",
                    k.vmlinux_path.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "config",
                    k.config_path.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "modules disk",
                    k.modules_disk.clone().unwrap_or_else(|| "-".into()),
                ),
                ("default", k.is_default.to_string()),
                ("created", k.created_at.clone()),
            ]);
            for s in &k.vmm_support {
                println!("{}: {}", s.vmm, s.summary());
            }
            if k.vmm_support.is_empty() {
                println!("vmms: unknown (imported before banger judged kernels; import it again)");
            }
        }
        KernelCmd::Pull { entry, name, json } => {
            if let Some(n) = &name {
                banger_api::validate::artifact_name(n, "kernel name").map_err(|e| anyhow!(e))?;
            }
            let req = banger_api::KernelPullRequest { entry, name };
            create_and_print::<KernelsPull>(&[], &req, json, |k| &k.name).await?;
        }
        KernelCmd::Catalog(f) => {
            let c = client::daemon().await?;
            let entries = c.call::<KernelsCatalog>(&[], &()).await?;
            if f.json {
                output::json(&entries)?;
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.name.clone(),
                            e.format.as_str().to_string(),
                            e.sha256[..12.min(e.sha256.len())].to_string(),
                            e.origin.clone(),
                            e.url.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "FORMAT", "SHA256", "ORIGIN", "URL"], &rows);
            }
        }
        KernelCmd::Rm { references } => {
            let c = client::daemon().await?;
            return remove_each::<KernelsRm>(&c, &references, &NoQuery {}, |k| &k.name).await;
        }
        KernelCmd::Default { reference } => {
            let c = client::daemon().await?;
            let k = c.call::<KernelsDefault>(&[&reference], &()).await?;
            println!("{}", k.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

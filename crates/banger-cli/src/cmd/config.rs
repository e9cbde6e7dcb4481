//! `banger config`: the effective configuration, as the daemon sees it.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use crate::args::JsonFlag;
use crate::client;
use crate::output;

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the effective configuration (file + defaults + environment)
    Show(JsonFlag),
}

pub async fn run(cmd: ConfigCmd) -> Result<ExitCode> {
    match cmd {
        ConfigCmd::Show(f) => {
            let c = client::daemon().await?;
            let v = c.call::<banger_api::endpoints::Config>(&[], &()).await?;
            if f.json {
                output::json(&v.config)?;
            } else {
                println!("# {}", v.path);
                print!("{}", v.toml);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

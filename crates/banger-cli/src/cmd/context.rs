//! `banger context create|ls|use|rm|show`: named remote hosts, as Docker's
//! contexts. The files are `crate::context`'s; choosing the daemon from
//! them is `client::endpoint`'s.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;

use super::JsonFlag;
use crate::client::ssh::SshTarget;
use crate::context::{ContextFile, DEFAULT, Store};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum ContextCmd {
    /// Name a remote host: `banger context create box --host ssh://me@box`
    Create {
        name: String,
        /// ssh://[user@]host[:port]
        #[arg(long, value_name = "ssh://[user@]host[:port]")]
        host: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the contexts; `*` marks the current one
    #[command(alias = "list")]
    Ls(JsonFlag),
    /// Send every later command to this context's host (`default`: this host)
    Use { name: String },
    /// Remove contexts
    #[command(alias = "delete")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// Also the current one (the current context becomes `default`)
        #[arg(short, long)]
        force: bool,
    },
    /// Print the context in use (`--context`, `BANGER_CONTEXT`, else the current one)
    Show,
}

#[derive(Debug, Serialize)]
struct Line {
    name: String,
    host: String,
    description: String,
    current: bool,
}

pub fn run(cmd: ContextCmd) -> Result<ExitCode> {
    let store = Store::new();
    match cmd {
        ContextCmd::Create {
            name,
            host,
            description,
        } => {
            let host = SshTarget::parse(&host)?.url();
            store.create(&name, &ContextFile { host, description })?;
            println!("{name}");
        }
        ContextCmd::Ls(f) => {
            let current = store.current()?;
            let mut lines = vec![Line {
                name: DEFAULT.into(),
                host: "this host".into(),
                description: "this host's own daemon".into(),
                current: current.is_none(),
            }];
            for c in store.list()? {
                lines.push(Line {
                    current: current.as_deref() == Some(c.name.as_str()),
                    name: c.name,
                    host: c.file.host,
                    description: c.file.description,
                });
            }
            if f.json {
                return output::json(&lines).map(|()| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = lines
                .into_iter()
                .map(|l| {
                    vec![
                        if l.current {
                            format!("{} *", l.name)
                        } else {
                            l.name
                        },
                        l.host,
                        l.description,
                    ]
                })
                .collect();
            output::table(&["NAME", "HOST", "DESCRIPTION"], &rows);
        }
        ContextCmd::Use { name } => {
            store.set_current(&name)?;
            println!("{name}");
            for var in [
                crate::client::host::HOST_VAR,
                crate::client::host::CONTEXT_VAR,
            ] {
                if std::env::var(var).is_ok_and(|v| !v.trim().is_empty()) {
                    eprintln!("banger: warning: {var} is set and overrides the current context");
                }
            }
        }
        ContextCmd::Rm { names, force } => {
            let mut failed = false;
            for n in names {
                match store.remove(&n, force) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("banger: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        ContextCmd::Show => {
            let name = match crate::client::host::named_context() {
                Some(n) => Some(n),
                None => store.current()?,
            };
            println!("{}", name.as_deref().unwrap_or(DEFAULT));
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `banger daemon`: status and stop, which never start the daemon, and
//! the daemon's OpenAPI document.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use banger_api::DaemonInfo;
use clap::Subcommand;

use crate::args::JsonFlag;
use crate::client::{self, Client};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum DaemonCmd {
    /// Is the daemon running? (never starts it)
    Status(JsonFlag),
    /// Stop the daemon; running VMs keep running
    Stop,
    /// Print the daemon's OpenAPI document (starts the daemon if needed)
    Openapi,
}

pub async fn run(cmd: DaemonCmd) -> Result<ExitCode> {
    if let DaemonCmd::Openapi = cmd {
        let c = client::daemon().await?;
        let doc = c.call::<banger_api::endpoints::OpenApi>(&[], &()).await?;
        output::json(&doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Status and stop never start a daemon, here or on a remote host.
    let c = Client::new(client::transport()?.without_start());
    match cmd {
        DaemonCmd::Openapi => unreachable!("answered above"),
        DaemonCmd::Status(f) => match c.try_ping().await? {
            Some(info) => {
                if f.json {
                    output::json(&info)?;
                } else {
                    print_info(&info);
                }
                Ok(ExitCode::SUCCESS)
            }
            None => {
                let mut v = serde_json::json!({"running": false});
                let at = match c.remote() {
                    Some(t) => {
                        v["host"] = t.url().into();
                        format!("on {t}")
                    }
                    None => {
                        let socket = client::layout()?.socket();
                        v["socket"] = socket.display().to_string().into();
                        format!("(socket {})", socket.display())
                    }
                };
                if f.json {
                    output::json(&v)?;
                } else {
                    println!("bangerd is not running {at}");
                }
                Ok(ExitCode::from(3))
            }
        },
        DaemonCmd::Stop => {
            let Some(info) = c.try_ping().await? else {
                println!("bangerd is not running");
                return Ok(ExitCode::SUCCESS);
            };
            c.call::<banger_api::endpoints::DaemonStop>(&[], &())
                .await?;
            // Wait for the process, not just the socket: the lock is held
            // until in-flight operations finish. A remote one's process is
            // not ours to see: wait until nothing answers there.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let gone = match c.remote() {
                    None => !Path::new(&format!("/proc/{}", info.pid)).exists(),
                    Some(_) => c.try_ping().await?.is_none(),
                };
                if gone {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(anyhow!(
                        "bangerd (pid {}) did not exit within 60s",
                        info.pid
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            println!("bangerd stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_info(info: &DaemonInfo) {
    output::fields(&[
        ("status", "running".into()),
        ("pid", info.pid.to_string()),
        ("version", info.version.clone()),
        ("api", format!("v{}", info.api_version)),
        ("socket", info.socket.clone()),
        ("data dir", info.data_dir.clone()),
        ("started", info.started_at.clone()),
    ]);
}

//! `banger daemon`: status and stop. Neither starts the daemon.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use banger_api::DaemonInfo;
use clap::Subcommand;
use hyper::http::Method;

use super::JsonFlag;
use crate::client::{self, Client};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum DaemonCmd {
    /// Is the daemon running? (never starts it)
    Status(JsonFlag),
    /// Stop the daemon; running VMs keep running
    Stop,
}

pub async fn run(cmd: DaemonCmd) -> Result<ExitCode> {
    // Neither command starts a daemon, here or on a remote host.
    let c = Client::new(client::transport()?.without_start());
    match cmd {
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
                let at = match c.remote() {
                    Some(t) => format!("on {t}"),
                    None => format!("(socket {})", client::layout()?.socket().display()),
                };
                if f.json {
                    let mut v = serde_json::json!({"running": false});
                    match c.remote() {
                        Some(t) => v["host"] = t.url().into(),
                        None => {
                            v["socket"] = client::layout()?.socket().display().to_string().into()
                        }
                    }
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
            let _: serde_json::Value = c.call(Method::POST, "/v1/daemon/stop", None::<&()>).await?;
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

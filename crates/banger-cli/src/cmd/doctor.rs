//! `banger doctor`: the host checks, run here in the CLI rather than in
//! the daemon because it is what people run when the daemon will not start.

use std::process::ExitCode;

use anyhow::Result;
use banger_api::CheckStatus;
use banger_config::Config;

use crate::output;

pub fn run(json: bool) -> Result<ExitCode> {
    let config = Config::load()?;
    let checks = banger_config::doctor::run(&config, &banger_config::doctor::Host::real());
    if json {
        output::json(&checks)?;
    } else {
        for c in &checks {
            let mark = match c.status {
                CheckStatus::Pass => "ok  ",
                CheckStatus::Warn => "warn",
                CheckStatus::Fail => "FAIL",
            };
            if c.fix.is_empty() {
                println!("{mark}  {:<12} {}", c.name, c.detail);
            } else {
                println!("{mark}  {:<12} {} -> {}", c.name, c.detail, c.fix);
            }
        }
    }
    let failed = checks.iter().any(|c| c.status == CheckStatus::Fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

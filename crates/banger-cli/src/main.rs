//! `banger`: the command-line client. This file parses the command line,
//! runs the command and prints its error as one line. The commands
//! (`cmd/`, one file per group) turn arguments into calls of the daemon's
//! declared endpoints through the one client (`client/`); what a VM
//! operation does is decided by `bangerd`. The CLI's own work is what must
//! happen where the user is: tar streams for `vm cp`, the git side of
//! workspaces, terminals for exec, port forwarding, and `doctor` and
//! `system`, which run when no daemon does.

mod args;
mod client;
mod cmd;
mod context;
mod exec;
mod input;
mod output;
mod pipe;
mod records;
mod upload;
mod workspace;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

/// Help and version print as clap renders them; a usage error becomes one
/// line (clap's first), like every other banger error, with exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("banger: {first} (see --help)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match cmd::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("banger: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cmd::run(cli));
    // Do not wait for a stdin reader blocked on a terminal nobody types in.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the context chain joined, as cloud-hypervisor does.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("banger: {}", msg.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

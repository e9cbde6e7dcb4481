//! `banger-rootfs`: the import worker, run by `banger-image` as
//! `fakeroot -- banger-rootfs build [--memory-staging DIR] (--dir DIR |
//! --tarball FILE | --layer none|gzip|zstd FILE...) --out DIR` (layers
//! bottom first).
//! Progress and the result go to stdout as JSON lines; a failure is a
//! `failed` line there (whether the source was at fault), one line on
//! stderr and exit status 1. All logic lives in the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use banger_image::{Compression, WorkerFailure, WorkerMessage, WorkerSource, run_worker};

const USAGE: &str = "usage: banger-rootfs build [--memory-staging DIR] (--dir DIR | --tarball FILE | --layer none|gzip|zstd FILE...) --out DIR";

fn parse(args: &[String]) -> Option<(WorkerSource, PathBuf)> {
    if args.get(1).map(String::as_str) == Some("--layer") {
        return parse_layers(args);
    }
    match args {
        [cmd, kind, src, out_flag, out] if cmd == "build" && out_flag == "--out" => {
            let source = match kind.as_str() {
                "--dir" => WorkerSource::Dir(src.into()),
                "--tarball" => WorkerSource::Tarball(src.into()),
                _ => return None,
            };
            Some((source, out.into()))
        }
        _ => None,
    }
}

/// `build (--layer COMPRESSION FILE)+ --out DIR`
fn parse_layers(args: &[String]) -> Option<(WorkerSource, PathBuf)> {
    let (cmd, rest) = args.split_first()?;
    if cmd != "build" {
        return None;
    }
    let mut layers = Vec::new();
    let mut rest = rest;
    loop {
        match rest {
            [flag, kind, file, tail @ ..] if flag == "--layer" => {
                let compression = match kind.as_str() {
                    "none" => Compression::None,
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    _ => return None,
                };
                layers.push((PathBuf::from(file), compression));
                rest = tail;
            }
            [flag, out] if flag == "--out" && !layers.is_empty() => {
                return Some((WorkerSource::Layers(layers), out.into()));
            }
            _ => return None,
        }
    }
}

fn main() -> ExitCode {
    // Die with fakeroot's shell, which dies with the daemon: an import whose
    // daemon was killed must stop writing before the next daemon cleans up.
    // If the parent is already gone (we were reparented), stop now.
    if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err()
        || nix::unistd::getppid() == nix::unistd::Pid::from_raw(1)
    {
        eprintln!("banger-rootfs: parent process is gone");
        return ExitCode::FAILURE;
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut memory_staging = None;
    if args.get(1).map(String::as_str) == Some("--memory-staging") && args.len() > 2 {
        memory_staging = Some(PathBuf::from(args.remove(2)));
        args.remove(1);
    }
    let Some((source, out)) = parse(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut stdout = std::io::stdout().lock();
    let mut emit = |msg: WorkerMessage| {
        if let Ok(line) = serde_json::to_string(&msg) {
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
    };
    match run_worker(&source, &out, memory_staging.as_deref(), &mut emit) {
        Ok(report) => {
            emit(WorkerMessage::Done(report));
            ExitCode::SUCCESS
        }
        Err(err) => {
            emit(WorkerMessage::Failed(WorkerFailure {
                input: err.is_input_error(),
            }));
            // One line: the error and its sources, for the daemon to show.
            let mut line = err.to_string();
            let mut cause = std::error::Error::source(&err);
            while let Some(c) = cause {
                line.push_str(": ");
                line.push_str(&c.to_string());
                cause = c.source();
            }
            eprintln!("{}", line.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

//! A bare driver of banger-system on a real host, for tests/guest.rs to run
//! inside a Debian guest whose PID 1 is systemd (the CLI verbs live in
//! banger-cli; this is the library alone).
//!
//! usage: system_smoke install PREFIX UID USER | status | restart | uninstall
//!        system_smoke insmod MODULE.ko   (the Debian image ships no kmod)

use std::path::Path;
use std::process::ExitCode;

use banger_system::{InstallSpec, Owner, SystemdHost, install, restart, status, uninstall};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new("/");
    let host = SystemdHost;
    let result: Result<String, Box<dyn std::error::Error>> = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["install", prefix, uid, user] => (|| {
            let owner = Owner {
                uid: uid.parse()?,
                name: (*user).to_owned(),
            };
            let report = install(&InstallSpec::new(owner, prefix), &host)?;
            Ok(format!("{report:?}"))
        })(),
        ["status"] => status(root, &host)
            .map(|s| s.to_string())
            .map_err(Into::into),
        ["restart"] => restart(root, &host)
            .map(|u| u.join(" "))
            .map_err(Into::into),
        ["insmod", module] => (|| {
            let file = std::fs::File::open(module)?;
            nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty())?;
            Ok(format!("loaded {module}"))
        })(),
        ["uninstall"] => uninstall(root, &host)
            .map(|r| format!("{r:?}"))
            .map_err(Into::into),
        _ => {
            Err("usage: system_smoke install PREFIX UID USER | status | restart | uninstall".into())
        }
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("system_smoke: {e}");
            ExitCode::FAILURE
        }
    }
}

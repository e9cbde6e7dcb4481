//! Builds an initramfs from the command line:
//! `mkinitramfs AGENT MODULES_DIR OUT [gzip]`.

use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: mkinitramfs AGENT MODULES_DIR|- OUT [gzip]");
        std::process::exit(2);
    }
    let modules = (args[2] != "-").then(|| Path::new(&args[2]));
    let compression = if args.get(4).map(String::as_str) == Some("gzip") {
        banger_initramfs::Compression::Gzip
    } else {
        banger_initramfs::Compression::None
    };
    match banger_initramfs::build_with(
        Path::new(&args[1]),
        modules,
        banger_initramfs::DEFAULT_MODULES,
        Path::new(&args[3]),
        compression,
    ) {
        Ok(info) => println!("{info:#?}"),
        Err(e) => {
            let mut err: &dyn std::error::Error = &e;
            eprint!("error: {err}");
            while let Some(s) = err.source() {
                eprint!(": {s}");
                err = s;
            }
            eprintln!();
            std::process::exit(1);
        }
    }
}

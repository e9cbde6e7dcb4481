//! `banger-agent`: the guest side of banger.
//!
//! It is `/init` of the banger initramfs, so it starts as PID 1 with nothing
//! mounted. It prepares the root filesystem from the disks the host gave
//! it, then either hands PID 1 to the image's own init and keeps serving
//! from a forked child, or stays PID 1 (reaping orphans) when the image has
//! no init. It serves the `banger-proto` protocol on the virtio-serial port
//! named `banger.agent` and on AF_VSOCK port 1024 when a vsock device exists.
//!
//! Started as a boot template (`banger.template=1`) it waits in the
//! initramfs for the host to say which VM it is (`template`).
//!
//! Besides execs it splices TCP connections into the guest (`tcp`),
//! streams tar archives in and out (`copy`), and reports listening ports
//! and resource usage (`ports`, `stats`), each on its own stream with
//! credit-window flow control (`flow`, `streams`).
//!
//! It does not know about images, VMMs or the host's state: everything it
//! needs arrives on the kernel command line (see `banger_proto::boot_params`) or over the
//! protocol. It links statically and uses std threads, no async runtime.

mod boot;
mod copy;
mod exec;
mod flow;
mod identity;
mod net;
mod ports;
mod reaper;
mod session;
mod shutdown;
mod spawn;
mod stats;
mod streams;
mod sys;
mod tcp;
mod template;
mod transport;
mod user;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use banger_proto::boot_params::{BootParams, InitMode};
use session::Ctx;
use transport::{Port, Sink};

/// Logs to stderr, which is /dev/console for PID 1: the VM's console log.
pub fn log(msg: &str) {
    eprintln!("banger-agent: {msg}");
}

/// Ends the boot on an unrecoverable error. Rebooting ends the VMM (QEMU
/// `-no-reboot`, Firecracker), so the host sees a dead VM and the reason in
/// the console log instead of a guest hanging forever.
fn fatal(what: &str, e: impl std::fmt::Display) -> ! {
    log(&format!("fatal: {what}: {e}"));
    sys::sync();
    let _ = sys::reboot(libc::RB_AUTOBOOT);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    let pid1 = sys::getpid() == 1;
    if !pid1 {
        // Started by something else (a service unit, a test): only serve.
        serve_forever(
            &Ctx {
                reaper: reaper::Reaper::start(),
                pid1: false,
            },
            None,
        );
    }

    // Phase 1: the API filesystems the next phases read from.
    boot::early_mounts();

    // Phase 2: what the host asked for.
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (params, warnings) = BootParams::parse(&cmdline);
    for w in warnings {
        log(&w);
    }

    // A boot template stops here, with only its channel to the host, and
    // goes on as the VM the host names (see `template`).
    let mut port = None;
    let params = if params.template {
        if let Err(e) =
            boot::load_modules_where(|m| template::loads_before_identity(m, &params.skip_modules))
        {
            fatal("read module list", e);
        }
        let (id, p) = template::wait_for_identity();
        port = Some(p);
        identity::boot_params(&params, &id).unwrap_or_else(|e| fatal("identity", e))
    } else {
        params
    };

    // Phase 3: drivers for disks, console ports, network, vsock, overlayfs.
    match boot::load_modules(&params.skip_modules) {
        Ok(n) => log(&format!("loaded {n} modules")),
        Err(e) => fatal("read module list", e),
    }

    // Phase 4: base + overlay + work disk become `/`.
    let switched = boot::switch_root(&params).unwrap_or_else(|e| fatal("prepare root", e));
    if switched && let Err(e) = boot::mount_modules(&params) {
        // The guest still boots; only modules beyond the initramfs's are missing.
        log(&format!("warning: modules disk: {e}"));
    }

    // Phase 5: identity and network.
    boot::identity(&params);
    if let Err(e) = net::configure(&params) {
        log(&format!("warning: network: {e}"));
    }

    // Phase 6: hand PID 1 to the image's init, or keep it.
    if switched && let Some(init) = pick_init(&params.init) {
        // Fork before any thread exists: the child is the agent daemon,
        // the parent (PID 1) becomes init, which must be PID 1 (systemd
        // refuses otherwise and only PID 1 inherits orphans).
        // SAFETY: single-threaded here, so fork is sound.
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: setsid in the fresh child; detaches it from
                // init's session so job control signals skip it.
                unsafe { libc::setsid() };
                serve_forever(
                    &Ctx {
                        reaper: reaper::Reaper::start(),
                        pid1: false,
                    },
                    port,
                );
            }
            pid if pid > 0 => {
                log(&format!("exec {init} (agent runs as pid {pid})"));
                let e = std::process::Command::new(&init).arg0(&init).exec();
                fatal(&format!("exec {init}"), e);
            }
            _ => log("fork failed; staying PID 1 without init"),
        }
    }

    // Phase 7: serve as PID 1.
    serve_forever(
        &Ctx {
            reaper: reaper::Reaper::start(),
            pid1: true,
        },
        port,
    );
}

fn pick_init(mode: &InitMode) -> Option<String> {
    match mode {
        InitMode::None => None,
        InitMode::Path(p) => Some(p.clone()),
        InitMode::Auto => {
            // exists() follows links: a dangling /sbin/init is not an init.
            let p = Path::new("/sbin/init");
            p.exists().then(|| "/sbin/init".to_owned())
        }
    }
}

/// Serves vsock and the virtio-serial port (`port` when a template wait
/// already holds it open) until the guest goes down.
fn serve_forever(ctx: &Ctx, port: Option<Port>) -> ! {
    match transport::vsock_listener() {
        Ok(Some(listener)) => {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                loop {
                    match transport::accept(&listener) {
                        Ok(conn) => {
                            let ctx = ctx.clone();
                            std::thread::spawn(move || {
                                let Ok(w) = conn.try_clone() else { return };
                                let sink = Arc::new(Sink::new(
                                    Box::new(w),
                                    Arc::new(AtomicBool::new(true)),
                                ));
                                session::serve(conn, sink, &ctx);
                            });
                        }
                        Err(e) => {
                            log(&format!("vsock accept: {e}"));
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            });
            log("listening on vsock port 1024");
        }
        Ok(None) => {}
        Err(e) => log(&format!("warning: vsock: {e}")),
    }

    let port = match port {
        Some(p) => p,
        None => {
            let Some(path) = transport::find_virtio_port(Duration::from_secs(10)) else {
                log("no virtio-serial port named banger.agent; serving vsock only");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            };
            let p =
                Port::open(&path).unwrap_or_else(|e| fatal(&format!("open {}", path.display()), e));
            log(&format!("serving on {}", path.display()));
            p
        }
    };
    loop {
        if let Err(e) = port.wait_for_host() {
            log(&format!("port poll: {e}"));
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        let alive = Arc::new(AtomicBool::new(true));
        let sink = Arc::new(Sink::new(Box::new(port.writer(alive.clone())), alive));
        session::serve(port.reader(), sink, ctx);
    }
}

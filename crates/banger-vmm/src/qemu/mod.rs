//! QEMU `-M microvm` driver.
//!
//! Devices are virtio-mmio: one virtio-blk per disk (named by serial, since
//! microvm's probe order is not the command-line order), a virtio-serial
//! port `banger.agent` backed by a Unix socket for the agent, an optional
//! virtio-net on a tap. The console (ttyS0) is a socket the daemon reads
//! into the bounded console log ([`crate::console`]) and QMP another Unix
//! socket.
//!
//! QEMU runs sandboxed: `-sandbox on,obsolete=deny,elevateprivileges=deny,
//! spawn=deny,resourcecontrol=deny` makes its seccomp filter refuse
//! obsolete system calls, privilege changes, starting processes and
//! changing its scheduling. So it is not asked to `-daemonize` (that forks
//! after the filter is in place); it is started as a detached child
//! ([`crate::child`]) and ready once its QMP socket accepts. Saved states
//! go through descriptors (`-incoming defer` + `migrate-incoming fd:N`,
//! and `getfd` + `migrate fd:NAME` over QMP) instead of `exec:cat`,
//! which spawned a shell.

pub mod qmp;
mod tsc;

pub use tsc::host_tsc_khz;

use std::path::Path;
use std::time::Duration;

use banger_proto::client::AgentClient;

use crate::spec::{Accel, GuestRam, LaunchSpec, VmHandles};
use crate::{Driver, Result, StopHow, VmmError, VmmKind, process, wait_exit};

/// Parameters every banger kernel gets under QEMU. `panic=-1` reboots on a
/// panic, which `-no-reboot` turns into QEMU exiting: a dead VM, not a hung
/// one. `quiet` because every kernel line is an emulated UART write: it
/// saves ~0.2 s of a ~1.8 s TCG boot; the agent's own lines still reach the
/// console (it writes /dev/console directly, not through printk).
const BASE_CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=t";

/// QEMU's seccomp sandbox, every optional part on.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// MiB of QEMU's translated-code cache under TCG. QEMU's default is up to
/// 1 GiB, grown as code is translated: capped, it fits the VM's cgroup
/// (a full cache is flushed and refilled, as any cache).
///
/// Why 64: the cache never shrinks, so an idle VM keeps all of it. A
/// Debian guest that boots systemd after a warm start translates ~400 MiB
/// of code on its way to idle and then runs ~12 MiB of it. Measured with
/// four such guests at once: 128 MiB kept 252 MiB of PSS per VM for 12.3
/// CPU-seconds of settling (3 flushes); 64 MiB keeps 180 MiB for 13.5
/// CPU-seconds (7 flushes); 32 MiB flushed 26 times. A busybox guest
/// never fills even 32 MiB.
pub const TCG_TB_MIB: u32 = 64;

/// TCG runs a VM's vCPUs on one host thread, in turns.
///
/// Why: with a thread per vCPU (QEMU's default), a vCPU can translate a
/// block of guest code while another vCPU rewrites it, and keep the stale
/// translation. Linux rewrites its own code at run time (static keys,
/// `text_poke_bp`: an int3 first, the new instruction after); a vCPU that
/// kept the int3 traps on it forever, and the guest hangs with both vCPUs
/// in `exc_int3`. Measured here on QEMU 7.2 with 2-vCPU busybox boots: 1
/// hang in 94 (found at `sched_clock_idle_wakeup_event`, the static key
/// `tsc=reliable` turns on late in boot); none in 400 with one thread.
/// The cost is that a guest's vCPUs share one host core.
pub const TCG_THREAD: &str = "single";

/// How long QEMU may take to build the machine and listen on QMP.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The RAM block's id: microvm's own name for the RAM of `-m`, which
/// QEMU documents as the id to give an explicit backend for migration
/// compatibility.
const RAM_ID: &str = "microvm.ram";

/// The chardev and filter that inject frames into a woken VM's NIC.
const INJECT_ID: &str = "banger-inject";
/// Sizes of the virtio-net header: plain, and with `num_buffers`.
const VNET_HDR: usize = 10;
const VNET_HDR_MRG: u32 = 12;

/// QEMU's migration capability that leaves RAM mapped shared out of a
/// saved state (and, on a load, expects it out).
const IGNORE_SHARED: &str = "x-ignore-shared";

/// The QEMU driver.
#[derive(Debug, Clone)]
pub struct QemuDriver {
    /// `qemu-system-x86_64` or a path to it.
    pub binary: String,
    /// Accelerator; see [`crate::detect_accel`].
    pub accel: Accel,
    /// Run under [`SANDBOX`] (on unless a benchmark measures without it).
    pub sandbox: bool,
}

impl Default for QemuDriver {
    fn default() -> Self {
        QemuDriver {
            binary: "qemu-system-x86_64".into(),
            accel: crate::detect_accel(),
            sandbox: true,
        }
    }
}

/// The serial console's socket in a VM's run directory.
pub fn console_socket(run_dir: &Path) -> std::path::PathBuf {
    run_dir.join("console.sock")
}

/// QEMU option values separate by commas; a literal comma is doubled.
fn esc(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

impl QemuDriver {
    /// The kernel command line for `spec`: ours, the disks by serial, then
    /// the caller's extras.
    pub fn cmdline(&self, spec: &LaunchSpec) -> String {
        let mut c = String::from(BASE_CMDLINE);
        if let (Accel::Tcg, Some(khz)) = (self.accel, host_tsc_khz()) {
            c.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
        }
        let params = spec.params_with_disks(|_, role| format!("serial:{}", role.id()));
        c.push(' ');
        c.push_str(&params.to_string());
        c
    }

    /// The full argument list (without the binary).
    pub fn args(&self, spec: &LaunchSpec) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-name".into(),
            format!("banger-{}", spec.name.replace(',', ",,")),
            "-M".into(),
            "microvm".into(),
            "-accel".into(),
            // Under TCG every page of guest code run is translated into a
            // cache that only grows (1 GiB by default); a cap bounds what a
            // VM holds (and fits its cgroup), at the cost of retranslating
            // when it fills. One thread runs every vCPU: see [`TCG_THREAD`].
            match (self.accel, spec.tcg_cache_mib) {
                (Accel::Kvm, _) => "kvm".into(),
                (Accel::Tcg, mib) => format!(
                    "tcg,tb-size={},thread={TCG_THREAD}",
                    mib.unwrap_or(TCG_TB_MIB)
                ),
            },
            "-cpu".into(),
            match self.accel {
                Accel::Kvm => "host".into(),
                Accel::Tcg => "max".into(),
            },
            "-m".into(),
            spec.memory_mib.to_string(),
            "-smp".into(),
            spec.vcpus.to_string(),
            "-no-reboot".into(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            // Listening, and waiting for the daemon before the machine
            // starts, so no early line is lost; later, with no one
            // connected, QEMU drops the guest's output (never blocks it).
            "-chardev".into(),
            format!(
                "socket,id=console,path={},server=on,wait=on",
                esc(&console_socket(&spec.run_dir))
            ),
            "-serial".into(),
            "chardev:console".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", esc(&spec.api_socket)),
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                esc(&spec.agent_socket)
            ),
            "-device".into(),
            format!(
                "virtserialport,chardev=agent,name={}",
                banger_proto::VIRTIO_PORT_NAME
            ),
            // Memory given back: pages the guest frees are reported and
            // dropped (free page reporting), and `vm set --memory`
            // inflates it. Without deflate-on-oom the guest's driver
            // takes inflated pages out of MemTotal.
            "-device".into(),
            "virtio-balloon-device,free-page-reporting=on".into(),
        ];
        // Only a boot gets a kernel and initramfs: for a saved state QEMU
        // would keep a copy of both (~13 MiB) for a boot that never comes
        // (a reboot ends the VMM, `-no-reboot`; the next start boots).
        let boots = spec.incoming.is_none();
        if boots {
            a.push("-kernel".into());
            a.push(spec.kernel.display().to_string());
            a.push("-append".into());
            a.push(self.cmdline(spec));
        }
        if self.sandbox {
            a.push("-sandbox".into());
            a.push(SANDBOX.into());
        }
        if spec.incoming.is_some() {
            // Load a saved state instead of booting, and stay paused (-S)
            // until `finish_restore`: the caller decides when the guest
            // runs again. `defer`: the state's descriptor (inherited; no
            // `exec:`, which the sandbox forbids) and any capability come
            // over QMP once QEMU runs (`spawn`).
            a.push("-S".into());
            a.push("-incoming".into());
            a.push("defer".into());
        }
        let ram_file = match &spec.ram {
            GuestRam::Anonymous => None,
            GuestRam::SharedFile(path) => Some((esc(path), "on")),
            // Inherited (see spawn); QEMU opens its own descriptor of the
            // same memfd through /proc, and maps it privately.
            GuestRam::MappedImage(fd) => Some((format!("/proc/self/fd/{fd}"), "off")),
        };
        if let Some((path, share)) = ram_file {
            // The id QEMU gives the RAM it makes for `-m` itself, so saved
            // states name the same RAM block whichever backs it.
            a.push("-object".into());
            a.push(format!(
                "memory-backend-file,id={RAM_ID},size={}M,mem-path={path},share={share}",
                spec.memory_mib
            ));
            a.push("-machine".into());
            a.push(format!("memory-backend={RAM_ID}"));
        }
        if let Some(initrd) = spec.initramfs.as_ref().filter(|_| boots) {
            a.push("-initrd".into());
            a.push(initrd.display().to_string());
        }
        for d in &spec.disks {
            let id = d.role.id();
            a.push("-drive".into());
            // A writable disk passes the guest's discards on as holes
            // punched in its sparse file: deleting in the guest frees room
            // on the host.
            a.push(format!(
                "id={id},file={},format=raw,if=none,cache=none,aio=threads{}",
                esc(&d.path),
                if d.read_only {
                    ",readonly=on"
                } else {
                    ",discard=unmap"
                }
            ));
            a.push("-device".into());
            a.push(format!("virtio-blk-device,drive={id},serial={id}"));
        }
        if spec.tap.is_none() && spec.detached_nic {
            // A hub with one port: the device exists, frames go nowhere.
            a.push("-netdev".into());
            a.push("hubport,id=net0,hubid=0".into());
            a.push("-device".into());
            a.push(match &spec.mac {
                Some(mac) => format!("virtio-net-device,netdev=net0,mac={mac}"),
                None => "virtio-net-device,netdev=net0".into(),
            });
        }
        if let Some(tap) = &spec.tap {
            a.push("-netdev".into());
            a.push(match spec.tap_fd {
                // The descriptor is inherited (see spawn): QEMU never opens
                // /dev/net/tun, so it needs no access to it.
                Some(fd) => format!("tap,id=net0,fd={fd}"),
                None => format!(
                    "tap,id=net0,ifname={},script=no,downscript=no",
                    tap.replace(',', ",,")
                ),
            });
            a.push("-device".into());
            a.push(match &spec.mac {
                Some(mac) => format!("virtio-net-device,netdev=net0,mac={mac}"),
                None => "virtio-net-device,netdev=net0".into(),
            });
            if let Some(sock) = &spec.inject_socket {
                // Frames handed to this socket reach the guest's NIC as if
                // read from the tap (see `inject_frames`): on the netdev's
                // `tx` queue, QEMU's name for what it sends to the NIC.
                a.push("-chardev".into());
                a.push(format!(
                    "socket,id={INJECT_ID},path={},server=on,wait=off",
                    esc(sock)
                ));
                a.push("-object".into());
                a.push(format!(
                    "filter-redirector,id={INJECT_ID}-filter,netdev=net0,queue=tx,indev={INJECT_ID},vnet_hdr_support=on"
                ));
            }
        }
        a
    }

    /// Hands `frames` to the guest's NIC of a VMM started with
    /// [`LaunchSpec::inject_socket`], once its guest runs: each frame with
    /// the virtio-net header of `hdr_len` bytes in front, as a tap hands
    /// them over. For frames that waited in a suspended VM's tap: QEMU
    /// would read them at start, before the saved NIC state sets the
    /// header size, and deliver them shifted (the guest drops them).
    pub async fn inject_frames(
        &self,
        socket: &Path,
        frames: &[Vec<u8>],
        hdr_len: usize,
    ) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut s = crate::connect_unix(socket, Duration::from_secs(5)).await?;
        let mut out = Vec::new();
        for f in frames {
            // The NIC takes the header QEMU asks the tap for once the
            // guest's features are loaded: the mergeable-buffers one (12
            // bytes, `num_buffers` after the 10 of `virtio_net_hdr`). A
            // frame read with the plain 10 gets the two bytes, zero.
            let mut frame = f.clone();
            if hdr_len == VNET_HDR && frame.len() >= VNET_HDR {
                frame.splice(VNET_HDR..VNET_HDR, [0, 0]);
            }
            let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            // filter-redirector's framing: length, then (vnet_hdr_support)
            // the header's length, then the bytes.
            out.extend(len.to_be_bytes());
            out.extend(VNET_HDR_MRG.to_be_bytes());
            out.extend(frame);
        }
        let io = |source| VmmError::Io {
            op: "inject frames through",
            path: socket.display().to_string(),
            source,
        };
        s.write_all(&out).await.map_err(io)?;
        s.flush().await.map_err(io)?;
        // QEMU reads the socket in its main loop, and drops what it has not
        // read when the peer hangs up: wait until it has read it all.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < deadline {
            let mut pending: libc::c_int = 0;
            // SAFETY: TIOCOUTQ (SIOCOUTQ on a socket: bytes the peer has
            // not read yet) writes one int we own.
            let rc = unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::TIOCOUTQ,
                    &mut pending,
                )
            };
            if rc < 0 || pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = s.shutdown().await;
        Ok(())
    }
}

impl QemuDriver {
    /// Reads the console from QEMU's first moment (it waits for us), then
    /// waits until QMP accepts: the machine is built. A QEMU that exits
    /// first is a failed start, explained by what it printed.
    async fn await_ready(
        &self,
        started: &mut crate::child::Started,
        spec: &LaunchSpec,
        console_sock: &Path,
        console: std::sync::Arc<crate::console::ConsoleLog>,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let failed = |stderr: String| VmmError::StartFailed {
            binary: self.binary.clone(),
            stderr,
        };
        // In its cgroup before the machine is built: QEMU waits for us on
        // its console socket until then.
        started.confined().await?;
        let mut serial = None;
        loop {
            if serial.is_none()
                && let Ok(s) = tokio::net::UnixStream::connect(console_sock).await
            {
                serial = Some(crate::console::drain(s, console.clone(), None));
            }
            if serial.is_some()
                && tokio::net::UnixStream::connect(&spec.api_socket)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if started.exited() {
                return Err(failed(started.output().await));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(VmmError::Timeout(
                    START_TIMEOUT,
                    "QEMU to build the machine",
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Driver for QemuDriver {
    fn kind(&self) -> VmmKind {
        VmmKind::Qemu
    }

    async fn spawn(&self, spec: &LaunchSpec) -> Result<VmHandles> {
        spec.validate()?;
        let io = |op, path: &Path| {
            let path = path.display().to_string();
            move |source| VmmError::Io { op, path, source }
        };
        std::fs::create_dir_all(&spec.run_dir).map_err(io("create", &spec.run_dir))?;
        let console_sock = console_socket(&spec.run_dir);
        // Stale sockets from a previous run would make QEMU fail to bind.
        for s in [&spec.agent_socket, &spec.api_socket, &console_sock] {
            match std::fs::remove_file(s) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", s)(e)),
            }
        }
        let console = crate::console::ConsoleLog::open(&spec.console_log, spec.console_bound())
            .map_err(io("open", &spec.console_log))?;
        // The saved state to load, held until spawn returns.
        let state = match &spec.incoming {
            Some(inc) => {
                let file = inc.dir.join(crate::state_files::QEMU_STATE);
                Some(std::fs::File::open(&file).map_err(io("open", &file))?)
            }
            None => None,
        };
        // Inherited under the numbers the arguments name: the tap, the
        // template's RAM image and the state (named over QMP).
        let mut keep_fds: Vec<i32> = spec.tap_fd.into_iter().collect();
        if let GuestRam::MappedImage(fd) = spec.ram {
            keep_fds.push(fd);
        }
        keep_fds.extend(state.as_ref().map(std::os::fd::AsRawFd::as_raw_fd));
        let mut started = crate::child::start(crate::child::ChildSpec {
            program: &self.binary,
            args: self.args(spec),
            keep_fds,
            cgroup: spec.cgroup.as_ref(),
            console: console.clone(),
            // QEMU asks for huge pages for every RAM block and its code
            // cache. Under TCG they buy little (every guest access goes
            // through QEMU's own TLB) and cost ~3 MiB per idle VM: the
            // 2 MiB ACPI ROM block of which 4 KiB is used, and the code
            // cache's last, partly filled huge page. Under KVM they speed
            // up the guest, so it keeps them.
            small_pages: self.accel == Accel::Tcg,
        })?;
        match self
            .await_ready(&mut started, spec, &console_sock, console)
            .await
        {
            Ok(()) => {}
            Err(e) => {
                started.kill();
                return Err(e);
            }
        }
        let (pid, pid_start_time) = (started.pid, started.start_time);
        started.reap_in_background();
        let h = VmHandles {
            driver: self.kind(),
            pid,
            pid_start_time,
            api_socket: spec.api_socket.clone(),
            agent_socket: spec.agent_socket.clone(),
            console_log: spec.console_log.clone(),
            console_socket: Some(console_sock),
            cgroup: spec.cgroup.clone(),
            jail: None,
            paused: false,
            saving: false,
            shared_ram: matches!(spec.ram, GuestRam::SharedFile(_)),
            memory_mib: spec.memory_mib,
        };
        if let Some(state) = &state {
            // A state saved from a template's shared RAM holds the devices
            // only; the mapped image is the RAM.
            let mapped = matches!(spec.ram, GuestRam::MappedImage(_));
            let load = async {
                let mut q = qmp::Qmp::connect(&h.api_socket, Duration::from_secs(10)).await?;
                if mapped {
                    q.set_capability(IGNORE_SHARED, true).await?;
                }
                q.migrate_incoming(std::os::fd::AsRawFd::as_raw_fd(state))
                    .await
            };
            if let Err(e) = load.await {
                let _ = self.kill(&h);
                wait_exit(&h, Duration::from_secs(5)).await;
                return Err(e);
            }
        }
        Ok(h)
    }

    fn confinement(&self, _h: &VmHandles) -> String {
        if self.sandbox {
            format!("qemu seccomp sandbox ({SANDBOX})")
        } else {
            "qemu without its sandbox".into()
        }
    }

    fn attach_console(&self, h: &VmHandles, max: u64) {
        let (Some(sock), log) = (h.console_socket.clone(), h.console_log.clone()) else {
            return;
        };
        tokio::spawn(async move {
            let Ok(stream) = tokio::net::UnixStream::connect(&sock).await else {
                return;
            };
            if let Ok(console) = crate::console::ConsoleLog::open(&log, max) {
                let _ = crate::console::drain(stream, console, None).await;
            }
        });
    }

    async fn connect_agent(&self, h: &VmHandles, timeout: Duration) -> Result<AgentClient> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = crate::connect_unix(&h.agent_socket, timeout).await?;
        // The chardev accepts before the guest opens its port; QEMU holds
        // our hello until the agent reads it, so one attempt suffices.
        match tokio::time::timeout_at(deadline, AgentClient::connect(stream)).await {
            Ok(r) => r.map_err(VmmError::Agent),
            Err(_) => Err(VmmError::Timeout(timeout, "the guest agent")),
        }
    }

    async fn stop(&self, h: &VmHandles, how: StopHow, timeout: Duration) -> Result<bool> {
        if !process::is_alive(h.pid, h.pid_start_time) {
            return Ok(true);
        }
        let asked = match how {
            StopHow::Agent => match self.connect_agent(h, timeout).await {
                Ok(client) => client.shutdown(false).await.is_ok(),
                Err(_) => false,
            },
            StopHow::Vmm => match qmp::Qmp::connect(&h.api_socket, timeout).await {
                Ok(mut q) => q.powerdown().await.is_ok(),
                Err(_) => false,
            },
        };
        if asked && wait_exit(h, timeout).await {
            return Ok(true);
        }
        self.kill(h)?;
        wait_exit(h, Duration::from_secs(5)).await;
        Ok(false)
    }

    async fn pause(&self, h: &VmHandles) -> Result<()> {
        qmp::Qmp::connect(&h.api_socket, Duration::from_secs(5))
            .await?
            .pause()
            .await
    }

    async fn resume(&self, h: &VmHandles) -> Result<()> {
        qmp::Qmp::connect(&h.api_socket, Duration::from_secs(5))
            .await?
            .resume()
            .await
    }

    async fn save_state(&self, h: &VmHandles, dir: &Path, timeout: Duration) -> Result<()> {
        let mut q = qmp::Qmp::connect(&h.api_socket, Duration::from_secs(5)).await?;
        // QEMU throttles a migration to 128 MiB/s by default, a limit for
        // sharing a network link; a local file wants the disk's speed.
        q.execute(
            "migrate-set-parameters",
            Some(serde_json::json!({ "max-bandwidth": 1u64 << 40 })),
        )
        .await?;
        // A template's shared RAM stays in its file; anything else is
        // written into the stream with the devices.
        q.set_capability(IGNORE_SHARED, h.shared_ram).await?;
        q.migrate_to_file(&dir.join(crate::state_files::QEMU_STATE), timeout)
            .await
    }

    async fn set_memory(&self, h: &VmHandles, mib: u32) -> Result<()> {
        qmp::Qmp::connect(&h.api_socket, Duration::from_secs(5))
            .await?
            .execute(
                "balloon",
                Some(serde_json::json!({ "value": u64::from(mib) << 20 })),
            )
            .await
            .map(drop)
    }

    async fn abort_save(&self, h: &VmHandles, timeout: Duration) -> Result<()> {
        qmp::Qmp::connect(&h.api_socket, Duration::from_secs(5))
            .await?
            .end_migration(timeout)
            .await
    }

    async fn await_loaded(&self, h: &VmHandles, timeout: Duration) -> Result<()> {
        let mut q = qmp::Qmp::connect(&h.api_socket, Duration::from_secs(5)).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        // `inmigrate` while the file is read, then `paused` (-S). A state
        // that does not fit the machine makes QEMU exit, closing QMP.
        loop {
            let status = q.status().await.map_err(|e| {
                VmmError::Qmp(format!(
                    "the saved state did not load (QEMU exited; does the VM still match the snapshot?): {e}"
                ))
            })?;
            match status.as_str() {
                // A template's device state loads in milliseconds: poll
                // finely, every wait here is start-up latency.
                "inmigrate" if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                "inmigrate" => return Err(VmmError::Timeout(timeout, "the saved state to load")),
                "paused" | "postmigrate" | "prelaunch" => return Ok(()),
                other => {
                    return Err(VmmError::Qmp(format!(
                        "after loading the saved state QEMU is {other}"
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DiskRole, DiskSpec};

    fn spec() -> LaunchSpec {
        LaunchSpec {
            name: "a,b".into(),
            kernel: "/k/vmlinuz".into(),
            initramfs: Some("/k/initrd".into()),
            params: banger_proto::boot_params::BootParams::parse("banger.init=none").0,
            vcpus: 2,
            memory_mib: 512,
            ram: GuestRam::Anonymous,
            tcg_cache_mib: None,
            inject_socket: None,
            disks: vec![
                DiskSpec {
                    role: DiskRole::Base,
                    path: "/i/base,1.ext4".into(),
                    read_only: true,
                },
                DiskSpec {
                    role: DiskRole::Work,
                    path: "/v/work.ext4".into(),
                    read_only: false,
                },
            ],
            tap: Some("tap0".into()),
            tap_fd: None,
            mac: Some("06:00:00:00:00:01".into()),
            console_log: "/v/console.log".into(),
            console_max: 0,
            cgroup: None,
            agent_socket: "/v/agent.sock".into(),
            api_socket: "/v/qmp.sock".into(),
            vsock_cid: None,
            incoming: None,
            detached_nic: false,
            run_dir: "/v/run".into(),
        }
    }

    #[test]
    fn args_name_disks_by_serial_and_escape_commas() {
        let d = QemuDriver {
            binary: "qemu-system-x86_64".into(),
            accel: Accel::Kvm,
            sandbox: true,
        };
        let a = d.args(&spec());
        let joined = a.join(" ");
        assert!(joined.contains("-name banger-a,,b"), "{joined}");
        assert!(
            joined.contains("file=/i/base,,1.ext4,format=raw"),
            "{joined}"
        );
        assert!(joined.contains("virtio-blk-device,drive=banger-base,serial=banger-base"));
        assert!(joined.contains("readonly=on"));
        assert!(
            joined.contains(
                "file=/v/work.ext4,format=raw,if=none,cache=none,aio=threads,discard=unmap"
            )
        );
        assert!(joined.contains("-device virtio-balloon-device,free-page-reporting=on"));
        assert!(joined.contains("virtserialport,chardev=agent,name=banger.agent"));
        assert!(joined.contains("tap,id=net0,ifname=tap0,script=no,downscript=no"));
        let mut with_fd = spec();
        with_fd.tap_fd = Some(7);
        let joined = d.args(&with_fd).join(" ");
        assert!(joined.contains("-netdev tap,id=net0,fd=7 "), "{joined}");
        assert!(joined.contains("-accel kvm -cpu host"));
        // Sandboxed, never daemonized (that forks), the console a socket.
        assert!(
            joined.contains(&format!("-sandbox {SANDBOX}")) && !joined.contains("-daemonize"),
            "{joined}"
        );
        assert!(joined.contains("-serial chardev:console"), "{joined}");
        let mut restore = spec();
        restore.incoming = Some(crate::Incoming { dir: "/s".into() });
        let joined = d.args(&restore).join(" ");
        assert!(joined.contains("-S -incoming defer"), "{joined}");
        assert!(
            !joined.contains("-kernel")
                && !joined.contains("-initrd")
                && !joined.contains("-append"),
            "a restore boots nothing: {joined}"
        );
        // The translation cache cap is TCG's alone.
        let mut capped = spec();
        capped.tcg_cache_mib = Some(48);
        assert!(d.args(&capped).join(" ").contains("-accel kvm "));
        let tcg = QemuDriver {
            binary: "q".into(),
            accel: Accel::Tcg,
            sandbox: true,
        };
        assert!(
            tcg.args(&capped)
                .join(" ")
                .contains("-accel tcg,tb-size=48,thread=single ")
        );
        let joined = tcg.args(&spec()).join(" ");
        assert!(
            joined.contains(&format!("-accel tcg,tb-size={TCG_TB_MIB},thread=single ")),
            "{joined}"
        );
        let append = &a[a.iter().position(|x| x == "-append").unwrap() + 1];
        assert_eq!(
            append,
            "console=ttyS0 quiet panic=-1 reboot=t banger.root=serial:banger-base \
             banger.work=serial:banger-work banger.init=none"
        );
    }

    #[test]
    fn tcg_gets_the_tsc_rate() {
        let d = QemuDriver {
            binary: "q".into(),
            accel: Accel::Tcg,
            sandbox: true,
        };
        let c = d.cmdline(&spec());
        let khz = host_tsc_khz().expect("x86_64 host");
        // Any real x86 TSC runs between 100 MHz and 10 GHz.
        assert!((100_000..10_000_000).contains(&khz), "{khz}");
        assert!(
            c.contains(&format!("tsc_early_khz={khz} tsc=reliable")),
            "{c}"
        );
    }
}

//! VMM drivers: start, watch and stop one VM process per VM.
//!
//! [`Driver`] is the whole surface the daemon uses: spawn from a
//! [`LaunchSpec`] (kernel, initramfs, disks, sockets), get back momentary
//! [`VmHandles`] (pid + start time, socket paths) to persist in
//! `handles.json`, check liveness, stop, kill, and connect to the guest
//! agent. Two implementations, one module each: [`qemu`] (`-M microvm`,
//! QMP, virtio-serial agent port; runs under TCG where KVM cannot boot the
//! kernel) and [`firecracker`] (typed API client over its Unix socket,
//! hybrid vsock). [`AnyDriver`] is the closed set the daemon selects from.
//!
//! VMM processes are started detached (own session, reparented away from
//! the daemon) so they outlive a daemon restart; liveness is always
//! judged by pid *and* start time ([`process::is_alive`]) so a reused pid is
//! never mistaken for our VM.
//!
//! This crate does not build disks, initramfs or networks, and holds no
//! state beyond what a call returns.

pub mod cgroup;
mod child;
pub mod console;
pub mod firecracker;
mod kind;
pub mod process;
pub mod qemu;
pub mod ram;
mod spec;

use std::time::Duration;

pub use spec::{
    Accel, DiskRole, DiskSpec, GuestRam, Incoming, LaunchSpec, VmHandles, detect_accel,
    kvm_limitation, state_files,
};

use banger_proto::client::{AgentClient, ClientError};

pub use kind::{UnknownVmm, VmmKind};

/// Errors of the VMM drivers.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The VMM binary could not be started.
    #[error("start {binary}")]
    Spawn {
        /// Program.
        binary: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The VMM exited during startup.
    #[error("{binary} failed to start: {stderr}")]
    StartFailed {
        /// Program.
        binary: String,
        /// What it printed.
        stderr: String,
    },
    /// A filesystem or socket operation failed.
    #[error("{op} {path}")]
    Io {
        /// Operation.
        op: &'static str,
        /// Path involved.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The launch spec is not usable by this driver.
    #[error("invalid launch spec: {0}")]
    InvalidSpec(String),
    /// The QMP conversation failed.
    #[error("qmp: {0}")]
    Qmp(String),
    /// The Firecracker API refused a request: its `fault_message`, then
    /// what was sent, so the field at fault is on the same line.
    #[error("firecracker refused {method} {path} ({status}): {fault}; sent {sent}")]
    Api {
        /// HTTP method.
        method: &'static str,
        /// Request path (names the resource).
        path: String,
        /// HTTP status.
        status: u16,
        /// Firecracker's `fault_message`, on one line.
        fault: String,
        /// The JSON body sent (names the fields).
        sent: String,
    },
    /// Firecracker refused the hybrid-vsock preamble.
    #[error("hybrid vsock connect refused: {0:?}")]
    HybridVsock(String),
    /// Talking to the guest agent failed.
    #[error("guest agent")]
    Agent(#[source] ClientError),
    /// The guest never answered on a host whose KVM cannot boot it.
    #[error(
        "the guest did not answer within {0:?}: {1}; use vmm = \"qemu\" (or \"auto\", which picks QEMU on this host)"
    )]
    KvmCannotBoot(Duration, &'static str),
    /// The VM's cgroup could not be made or entered.
    #[error("confine the VMM")]
    Cgroup(#[source] cgroup::CgroupError),
    /// Waiting timed out.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
}

/// Result of this crate.
pub type Result<T, E = VmmError> = std::result::Result<T, E>;

/// How [`Driver::stop`] asks the guest to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopHow {
    /// Through the guest agent's `Shutdown` (works with or without an init).
    Agent,
    /// The VMM's power button: QMP `system_powerdown` / Firecracker
    /// `SendCtrlAltDel`. Needs an init in the guest that handles it.
    Vmm,
}

/// One VMM implementation.
#[allow(async_fn_in_trait)] // used through AnyDriver, never as dyn
pub trait Driver {
    /// Which VMM this is.
    fn kind(&self) -> VmmKind;

    /// Short name: `qemu`, `firecracker`.
    fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Whether [`LaunchSpec::tap_fd`] is used: the VMM can take its tap as
    /// an inherited descriptor.
    fn takes_tap_fd(&self) -> bool {
        self.kind().takes_tap_fd()
    }

    /// Starts a VM, detached from the caller, and returns its handles once
    /// the VMM runs (not once the guest is ready: use [`Driver::connect_agent`]).
    async fn spawn(&self, spec: &LaunchSpec) -> Result<VmHandles>;

    /// Connects to the guest agent, waiting up to `timeout` for it to be
    /// ready (the guest may still be booting).
    ///
    /// Under QEMU the virtio-serial port takes one host connection at a
    /// time: a second connect waits until the first client is dropped. The
    /// caller should hold one [`AgentClient`] per VM and share it (it is
    /// `Clone` and multiplexes any number of execs).
    async fn connect_agent(&self, h: &VmHandles, timeout: Duration) -> Result<AgentClient>;

    /// Asks the guest to stop and waits up to `timeout` for the VMM to
    /// exit; kills it after that. Returns true when it stopped gracefully.
    /// [`StopHow::Agent`] opens its own agent connection: drop yours first
    /// (or call [`AgentClient::shutdown`] yourself and then this).
    async fn stop(&self, h: &VmHandles, how: StopHow, timeout: Duration) -> Result<bool>;

    /// Stops the guest's vCPUs; memory and devices stay as they are. The
    /// guest's clock does not advance while paused.
    async fn pause(&self, h: &VmHandles) -> Result<()>;

    /// Runs the vCPUs of a paused guest again.
    async fn resume(&self, h: &VmHandles) -> Result<()>;

    /// Asks the guest to keep `mib` of its memory and give the rest back
    /// (the balloon inflates or deflates); at most what it booted with
    /// ([`VmHandles::memory_mib`]). Returns once the VMM took the target;
    /// the guest follows in its own time.
    async fn set_memory(&self, h: &VmHandles, mib: u32) -> Result<()>;

    /// Saves the memory and device state of a *paused* guest into `dir`
    /// (existing, empty), as files named in [`state_files`]; the guest
    /// stays paused. QEMU: `migrate` to a file; Firecracker: `PUT
    /// /snapshot/create`. Restored by spawning a [`LaunchSpec`] whose
    /// `incoming` names `dir`, then [`Driver::finish_restore`].
    async fn save_state(
        &self,
        h: &VmHandles,
        dir: &std::path::Path,
        timeout: Duration,
    ) -> Result<()>;

    /// After a spawn with `incoming`: waits until the state is loaded and
    /// runs the vCPUs.
    async fn finish_restore(&self, h: &VmHandles, timeout: Duration) -> Result<()> {
        self.await_loaded(h, timeout).await?;
        self.resume(h).await
    }

    /// After a spawn with `incoming`: waits until the state is loaded,
    /// leaving the guest paused (a caller that must do something between
    /// the load and the guest running; [`Driver::resume`] runs it).
    async fn await_loaded(&self, _h: &VmHandles, _timeout: Duration) -> Result<()> {
        Ok(())
    }

    /// Ends a [`Driver::save_state`] whose caller died (a daemon killed
    /// mid-save) and waits until the VMM says it is over, so that a resume
    /// that follows sticks. QEMU's migration runs on without its client;
    /// Firecracker's `/snapshot/create` is one request that ends by itself.
    async fn abort_save(&self, _h: &VmHandles, _timeout: Duration) -> Result<()> {
        Ok(())
    }

    /// How this VMM confines itself, in words (`vm show`).
    fn confinement(&self, _h: &VmHandles) -> String {
        "not sandboxed".into()
    }

    /// Reads the console of a VM this process did not start (a restarted
    /// daemon) into its log again, bounded at `max` bytes, where the VMM
    /// allows it (QEMU's serial socket; a Firecracker's pipe is gone).
    fn attach_console(&self, _h: &VmHandles, _max: u64) {}

    /// Kills the VMM process now (no-op when it is gone).
    fn kill(&self, h: &VmHandles) -> Result<()> {
        process::kill(h.pid, h.pid_start_time)
    }

    /// Whether this VM's VMM process is alive.
    fn is_alive(&self, h: &VmHandles) -> bool {
        process::is_alive(h.pid, h.pid_start_time)
    }
}

/// The drivers the daemon can pick from.
#[derive(Debug, Clone)]
pub enum AnyDriver {
    /// QEMU microvm.
    Qemu(qemu::QemuDriver),
    /// Firecracker.
    Firecracker(firecracker::FirecrackerDriver),
}

/// Where each VMM's binary is, for [`AnyDriver::of_kind`].
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `qemu-system-x86_64` or a path to it.
    pub qemu: String,
    /// `firecracker` or a path to it.
    pub firecracker: String,
    /// How to jail Firecracker, when it is jailed.
    pub jailer: Option<firecracker::jail::Jailer>,
}

impl AnyDriver {
    /// What a state this driver saves depends on besides the machine it
    /// describes: the VMM binary (path, size and modification time: an
    /// upgraded VMM may not load an older one's state) and, for QEMU, the
    /// accelerator.
    pub fn state_identity(&self) -> Vec<String> {
        match self {
            AnyDriver::Qemu(q) => vec![binary_identity(&q.binary), q.accel.as_str().to_string()],
            AnyDriver::Firecracker(f) => vec![binary_identity(&f.binary)],
        }
    }

    /// The driver of `kind`: for a VM started under another VMM than
    /// today's choice (the config changed while it ran), or for today's
    /// choice itself. QEMU's accelerator is detected on this host.
    pub fn of_kind(kind: VmmKind, binaries: &Binaries) -> AnyDriver {
        match kind {
            VmmKind::Qemu => AnyDriver::Qemu(qemu::QemuDriver {
                binary: binaries.qemu.clone(),
                accel: detect_accel(),
                sandbox: true,
            }),
            VmmKind::Firecracker => AnyDriver::Firecracker(firecracker::FirecrackerDriver {
                binary: binaries.firecracker.clone(),
                jailer: binaries.jailer.clone(),
            }),
        }
    }

    /// Whether a state this driver saved loads with the VM's disks at other
    /// paths than it was saved with: what restoring under a new name,
    /// forking and boot templates need. QEMU's does; Firecracker reopens
    /// the drive paths saved in its state, which only its jail makes the
    /// same for every VM.
    pub fn restores_to_new_paths(&self) -> bool {
        match self {
            AnyDriver::Qemu(_) => true,
            AnyDriver::Firecracker(f) => f.jailer.is_some(),
        }
    }

    /// Why boot templates (warm starts) of a shape with or without a NIC
    /// cannot be made with this driver, if they cannot.
    pub fn templates_unsupported(&self, nic: bool) -> Option<&'static str> {
        match self {
            AnyDriver::Qemu(_) => None,
            AnyDriver::Firecracker(f) if f.jailer.is_none() => Some(
                "an unjailed Firecracker reopens the disk paths saved in its state (its jail \
                 gives every VM the same ones)",
            ),
            // A template's NIC would need a tap of its own to be saved
            // with (QEMU has a hub port with no host side).
            AnyDriver::Firecracker(_) if nic => {
                Some("a Firecracker template with a NIC would need a tap of its own")
            }
            AnyDriver::Firecracker(_) => None,
        }
    }
}

impl Driver for AnyDriver {
    fn kind(&self) -> VmmKind {
        match self {
            AnyDriver::Qemu(_) => VmmKind::Qemu,
            AnyDriver::Firecracker(_) => VmmKind::Firecracker,
        }
    }
    async fn spawn(&self, spec: &LaunchSpec) -> Result<VmHandles> {
        match self {
            AnyDriver::Qemu(d) => d.spawn(spec).await,
            AnyDriver::Firecracker(d) => d.spawn(spec).await,
        }
    }
    async fn connect_agent(&self, h: &VmHandles, timeout: Duration) -> Result<AgentClient> {
        match self {
            AnyDriver::Qemu(d) => d.connect_agent(h, timeout).await,
            AnyDriver::Firecracker(d) => d.connect_agent(h, timeout).await,
        }
    }
    async fn stop(&self, h: &VmHandles, how: StopHow, timeout: Duration) -> Result<bool> {
        match self {
            AnyDriver::Qemu(d) => d.stop(h, how, timeout).await,
            AnyDriver::Firecracker(d) => d.stop(h, how, timeout).await,
        }
    }
    async fn pause(&self, h: &VmHandles) -> Result<()> {
        match self {
            AnyDriver::Qemu(d) => d.pause(h).await,
            AnyDriver::Firecracker(d) => d.pause(h).await,
        }
    }
    async fn resume(&self, h: &VmHandles) -> Result<()> {
        match self {
            AnyDriver::Qemu(d) => d.resume(h).await,
            AnyDriver::Firecracker(d) => d.resume(h).await,
        }
    }
    async fn set_memory(&self, h: &VmHandles, mib: u32) -> Result<()> {
        match self {
            AnyDriver::Qemu(d) => d.set_memory(h, mib).await,
            AnyDriver::Firecracker(d) => d.set_memory(h, mib).await,
        }
    }
    async fn save_state(
        &self,
        h: &VmHandles,
        dir: &std::path::Path,
        timeout: Duration,
    ) -> Result<()> {
        match self {
            AnyDriver::Qemu(d) => d.save_state(h, dir, timeout).await,
            AnyDriver::Firecracker(d) => d.save_state(h, dir, timeout).await,
        }
    }
    async fn finish_restore(&self, h: &VmHandles, timeout: Duration) -> Result<()> {
        match self {
            AnyDriver::Qemu(d) => d.finish_restore(h, timeout).await,
            AnyDriver::Firecracker(d) => d.finish_restore(h, timeout).await,
        }
    }
    fn confinement(&self, h: &VmHandles) -> String {
        match self {
            AnyDriver::Qemu(d) => d.confinement(h),
            AnyDriver::Firecracker(d) => d.confinement(h),
        }
    }
    fn attach_console(&self, h: &VmHandles, max: u64) {
        match self {
            AnyDriver::Qemu(d) => d.attach_console(h, max),
            AnyDriver::Firecracker(d) => d.attach_console(h, max),
        }
    }
    async fn await_loaded(&self, h: &VmHandles, timeout: Duration) -> Result<()> {
        match self {
            AnyDriver::Qemu(d) => d.await_loaded(h, timeout).await,
            AnyDriver::Firecracker(d) => d.await_loaded(h, timeout).await,
        }
    }
    async fn abort_save(&self, h: &VmHandles, timeout: Duration) -> Result<()> {
        match self {
            AnyDriver::Qemu(d) => d.abort_save(h, timeout).await,
            AnyDriver::Firecracker(d) => d.abort_save(h, timeout).await,
        }
    }
}

/// A binary as a saved state depends on it: its name and, when it can be
/// found (a path, else in `PATH`), its size and modification time.
fn binary_identity(binary: &str) -> String {
    let path = if binary.contains('/') {
        Some(std::path::PathBuf::from(binary))
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(binary))
                .find(|c| c.is_file())
        })
    };
    let meta = path.as_ref().and_then(|p| std::fs::metadata(p).ok());
    format!(
        "{binary}:{:?}:{:?}",
        meta.as_ref().map(std::fs::Metadata::len),
        meta.and_then(|m| m.modified().ok())
    )
}

/// Waits until the VMM process is gone, up to `timeout`.
pub async fn wait_exit(h: &VmHandles, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while process::is_alive(h.pid, h.pid_start_time) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Connects to a Unix socket, retrying until it exists and accepts or
/// `timeout` passes.
pub(crate) async fn connect_unix(
    path: &std::path::Path,
    timeout: Duration,
) -> Result<tokio::net::UnixStream> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::net::UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(VmmError::Io {
                    op: "connect",
                    path: path.display().to_string(),
                    source: e,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

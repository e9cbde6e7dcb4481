//! Firecracker driver.
//!
//! Starts `firecracker --api-sock` detached in its own session with its
//! stdout and stderr (the guest serial console, and Firecracker's own
//! start-up errors) going to the console log, waits for its API socket,
//! configures the VM through [`api`] / [`client`] and starts it. The agent
//! is reached over hybrid vsock: the host side is the Unix socket
//! `agent_socket`, where `CONNECT 1024` reaches the agent's AF_VSOCK
//! listener.
//!
//! Every failure before the VM runs kills the process, waits for it and
//! removes the sockets it made, so a failed start leaves nothing running.
//! On a host whose KVM cannot boot a standard kernel (PVM-only; see
//! [`crate::kvm_limitation`]) Firecracker accepts the whole configuration
//! and `InstanceStart`, then the guest hangs without a word: there the wait
//! for the agent is cut to [`LIMITED_KVM_BOOT_WINDOW`] and the error says why.
//! `tests/firecracker_real.rs` drives the real binary through all of this;
//! `tests/boot_firecracker.rs` boots a guest where KVM allows it.

pub mod api;
pub mod balloon;
pub mod client;
pub mod jail;
pub mod launch;
mod vsock;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use banger_proto::client::AgentClient;
use tokio::net::UnixStream;

use crate::spec::{LaunchSpec, VmHandles};
use crate::{Driver, Result, StopHow, VmmError, VmmKind, process, wait_exit};

/// How long Firecracker may take to create its API socket (it takes a few ms).
const API_READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a guest may take to answer where KVM cannot boot a standard
/// kernel. Under working KVM a Firecracker guest answers in well under a
/// second, so this is generous for a PVM-enabled kernel, and it bounds how
/// long `vm start` hangs on a kernel that will never come up.
pub const LIMITED_KVM_BOOT_WINDOW: Duration = Duration::from_secs(10);

/// The Firecracker driver.
#[derive(Debug, Clone)]
pub struct FirecrackerDriver {
    /// `firecracker` or a path to it.
    pub binary: String,
    /// Run it under its jailer ([`jail`]); `None`: as the daemon's user,
    /// unconfined but for its built-in filter.
    pub jailer: Option<jail::Jailer>,
}

impl Default for FirecrackerDriver {
    fn default() -> Self {
        FirecrackerDriver {
            binary: "firecracker".into(),
            jailer: None,
        }
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VmmError {
    let path = path.display().to_string();
    move |source| VmmError::Io { op, path, source }
}

fn remove_if_present(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", p)(e)),
        _ => Ok(()),
    }
}

/// What Firecracker cannot be given, found before it is started: each is
/// an error it would answer later and less clearly.
fn preflight(spec: &LaunchSpec, sockets: [&Path; 2]) -> Result<()> {
    spec.validate()?;
    if spec.ram != crate::GuestRam::Anonymous {
        // Firecracker restores map their memory file privately already
        // (`/snapshot/load`'s File backend); boot templates are QEMU's.
        return Err(VmmError::InvalidSpec(
            "firecracker guests boot on anonymous memory".into(),
        ));
    }
    for (field, s) in [("api socket", sockets[0]), ("vsock uds_path", sockets[1])] {
        api::socket_path(field, &s.display().to_string())?;
    }
    // On x86_64 Firecracker loads only an ELF vmlinux; a bzImage fails at
    // InstanceStart with "Invalid Elf magic number".
    let mut magic = [0u8; 4];
    std::fs::File::open(&spec.kernel)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(io("read", &spec.kernel))?;
    if &magic != b"\x7fELF" {
        return Err(VmmError::InvalidSpec(format!(
            "firecracker boots an uncompressed ELF vmlinux; {} is not one (a bzImage?)",
            spec.kernel.display()
        )));
    }
    if !Path::new("/dev/kvm").exists() {
        return Err(VmmError::InvalidSpec(
            "firecracker needs KVM and there is no /dev/kvm".into(),
        ));
    }
    Ok(())
}

/// Firecracker's reason for exiting at start, from what it printed
/// (`; `-joined lines): the last error line but the final "exiting with
/// error", without the timestamp and thread prefix.
fn startup_error(printed: &str) -> String {
    let tail = printed.replace("; ", "\n");
    let strip = |l: &str| match l.find("] ") {
        Some(i) if l.starts_with(|c: char| c.is_ascii_digit()) => l[i + 2..].trim().to_string(),
        _ => l.trim().to_string(),
    };
    let errors = || {
        tail.lines()
            .rev()
            .filter(|l| !l.contains("exiting with error"))
            .filter(|l| l.to_ascii_lowercase().contains("error"))
    };
    // Its logged line reads better than the Debug form printed after it.
    errors()
        .find(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .or_else(|| errors().next())
        .or_else(|| tail.lines().rev().find(|l| !l.trim().is_empty()))
        .map(strip)
        .unwrap_or_else(|| "(no output)".into())
}

impl FirecrackerDriver {
    /// Starts Firecracker and applies the whole configuration of `spec`,
    /// stopping short of `InstanceStart`: the host side of a boot. On
    /// error nothing is left running.
    pub async fn prepare(&self, spec: &LaunchSpec) -> Result<VmHandles> {
        self.launch(spec, false).await
    }

    async fn launch(&self, spec: &LaunchSpec, start: bool) -> Result<VmHandles> {
        let jail = self
            .jailer
            .as_ref()
            .map(|j| (j, jail::Jail::of(j, &spec.run_dir)));
        // Where the daemon reaches the sockets, and the spec as Firecracker
        // is told it (in-chroot names when jailed).
        let (api_socket, agent_socket, told) = match &jail {
            Some((_, jl)) => (
                jl.host(jail::inner::API_SOCKET),
                jl.host(jail::inner::AGENT_SOCKET),
                jl.inner_spec(spec),
            ),
            None => (
                spec.api_socket.clone(),
                spec.agent_socket.clone(),
                spec.clone(),
            ),
        };
        preflight(spec, [&api_socket, &agent_socket])?;
        std::fs::create_dir_all(&spec.run_dir).map_err(io("create", &spec.run_dir))?;
        match &jail {
            Some((j, jl)) => {
                jl.prepare(j, spec)?;
                if let Some(inc) = &spec.incoming {
                    jl.link_state_in(&inc.dir)?;
                }
            }
            None => {
                for s in [&agent_socket, &api_socket] {
                    remove_if_present(s)?;
                }
            }
        }
        let console = crate::console::ConsoleLog::open(&spec.console_log, spec.console_bound())
            .map_err(io("open", &spec.console_log))?;
        // Its log goes to stdout with the serial console (the daemon's
        // bounded pipe), warnings and errors only.
        let mut fc_args = vec![
            "--api-sock".to_string(),
            told.api_socket.display().to_string(),
            "--level".into(),
            "Warning".into(),
        ];
        let (program, args) = match &jail {
            Some((j, jl)) => (
                j.binary.display().to_string(),
                jl.args(j, &self.binary, &fc_args),
            ),
            None => {
                fc_args.extend(["--id".to_string(), api::instance_id(&spec.name)]);
                (self.binary.clone(), fc_args)
            }
        };
        let mut started = crate::child::start(crate::child::ChildSpec {
            program: &program,
            args,
            keep_fds: Vec::new(),
            cgroup: spec.cgroup.as_ref(),
            console,
            // Under KVM huge pages speed up the guest's memory.
            small_pages: false,
        })?;
        let handles = VmHandles {
            driver: self.kind(),
            pid: started.pid,
            pid_start_time: started.start_time,
            api_socket: api_socket.clone(),
            agent_socket,
            console_log: spec.console_log.clone(),
            console_socket: None,
            cgroup: spec.cgroup.clone(),
            jail: jail.as_ref().map(|(_, jl)| jl.dir.clone()),
            paused: false,
            saving: false,
            shared_ram: false,
            memory_mib: spec.memory_mib,
        };
        let ready = match started.confined().await {
            // In its cgroup before any request, so before guest memory.
            Ok(()) => self.wait_api(&mut started, &api_socket).await,
            Err(e) => Err(e),
        };
        // Reap it when it ends while we live; after a daemon restart it is
        // init's child and init reaps it.
        started.reap_in_background();
        let configured = match ready {
            Ok(stream) => self.configure(stream, &told, &api_socket, start).await,
            Err(e) => Err(e),
        };
        if let Err(e) = configured {
            self.discard(&handles).await;
            return Err(e);
        }
        Ok(handles)
    }

    /// Waits for the API socket to accept (returning that connection, which
    /// the configuration then uses), or for the process to exit
    /// (a bad argument, a socket path in use), whichever comes first.
    async fn wait_api(
        &self,
        started: &mut crate::child::Started,
        api_socket: &Path,
    ) -> Result<UnixStream> {
        let deadline = tokio::time::Instant::now() + API_READY_TIMEOUT;
        loop {
            if started.exited() {
                let printed = started.output().await;
                return Err(VmmError::StartFailed {
                    binary: self.binary.clone(),
                    stderr: format!(
                        "{} (api socket {})",
                        startup_error(&printed),
                        api_socket.display()
                    ),
                });
            }
            match UnixStream::connect(api_socket).await {
                Ok(s) => return Ok(s),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(VmmError::Timeout(
                        API_READY_TIMEOUT,
                        "the firecracker API socket",
                    ));
                }
                // A connect attempt costs microseconds; poll finely.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    /// The whole configuration on one connection, then `InstanceStart`
    /// when `start`; for a restore (`spec.incoming`) only the snapshot load,
    /// which replaces every configuration request.
    async fn configure(
        &self,
        stream: UnixStream,
        spec: &LaunchSpec,
        api_socket: &Path,
        start: bool,
    ) -> Result<()> {
        let reqs = match &spec.incoming {
            Some(inc) => vec![api::snapshot_load(&inc.dir, spec)?],
            None => {
                let mut reqs = launch::configure_requests(spec)?;
                if start {
                    reqs.push(api::action(api::ActionType::InstanceStart));
                }
                reqs
            }
        };
        let mut session = client::Session::over(stream, api_socket).await?;
        for req in &reqs {
            session.send(req).await?;
        }
        Ok(())
    }

    /// Kills a VMM that failed to start, waits for it to go, and removes
    /// its sockets.
    async fn discard(&self, h: &VmHandles) {
        let _ = self.kill(h);
        wait_exit(h, Duration::from_secs(5)).await;
        let _ = remove_if_present(&h.api_socket);
        let _ = remove_if_present(&h.agent_socket);
        if let Some(dir) = &h.jail {
            jail::Jail::remove(dir);
        }
    }

    /// The chroot of the running `h`, when it is jailed.
    fn jail_of(&self, h: &VmHandles) -> Option<jail::Jail> {
        let dir = h.jail.clone()?;
        Some(jail::Jail {
            root: dir.join("root"),
            id: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir,
        })
    }
}

impl Driver for FirecrackerDriver {
    fn kind(&self) -> VmmKind {
        VmmKind::Firecracker
    }

    fn confinement(&self, h: &VmHandles) -> String {
        match (&self.jailer, &h.jail) {
            (Some(j), Some(dir)) => format!(
                "firecracker jailed in {} as uid {}:{}, {}",
                dir.join("root").display(),
                j.uid,
                j.gid,
                match &j.seccomp_filter {
                    Some(f) => format!("seccomp filter {}", f.display()),
                    None => "its built-in seccomp filter".into(),
                }
            ),
            _ => "firecracker not jailed (its built-in seccomp filter only)".into(),
        }
    }

    async fn spawn(&self, spec: &LaunchSpec) -> Result<VmHandles> {
        self.launch(spec, true).await
    }

    async fn connect_agent(&self, h: &VmHandles, timeout: Duration) -> Result<AgentClient> {
        // Where KVM cannot boot a standard kernel the guest hangs in
        // silence: do not wait minutes for it, and say why.
        let limited = crate::kvm_limitation();
        let timeout = match limited {
            Some(_) => timeout.min(LIMITED_KVM_BOOT_WINDOW),
            None => timeout,
        };
        let timed_out = || match limited {
            Some(why) => VmmError::KvmCannotBoot(timeout, why),
            None => VmmError::Timeout(timeout, "the guest agent"),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        // Until the guest listens, Firecracker refuses CONNECT by closing the
        // stream; retry until the deadline.
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = async {
                let s = crate::connect_unix(&h.agent_socket, left).await?;
                let s = vsock::connect(s, banger_proto::VSOCK_PORT).await?;
                AgentClient::connect(s).await.map_err(VmmError::Agent)
            };
            match tokio::time::timeout(left, attempt).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(_)) | Err(_) if limited.is_some() => return Err(timed_out()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(timed_out()),
            }
        }
    }

    async fn stop(&self, h: &VmHandles, how: StopHow, timeout: Duration) -> Result<bool> {
        if !process::is_alive(h.pid, h.pid_start_time) {
            return Ok(true);
        }
        let asked = match how {
            StopHow::Agent => match self.connect_agent(h, timeout).await {
                Ok(c) => c.shutdown(false).await.is_ok(),
                Err(_) => false,
            },
            StopHow::Vmm => {
                client::send(&h.api_socket, &api::action(api::ActionType::SendCtrlAltDel))
                    .await
                    .is_ok()
            }
        };
        if asked && wait_exit(h, timeout).await {
            return Ok(true);
        }
        self.kill(h)?;
        wait_exit(h, Duration::from_secs(5)).await;
        Ok(false)
    }

    async fn pause(&self, h: &VmHandles) -> Result<()> {
        client::send(&h.api_socket, &api::set_vm_state(api::VmRunState::Paused))
            .await
            .map(drop)
    }

    async fn resume(&self, h: &VmHandles) -> Result<()> {
        client::send(&h.api_socket, &api::set_vm_state(api::VmRunState::Resumed))
            .await
            .map(drop)
    }

    async fn set_memory(&self, h: &VmHandles, mib: u32) -> Result<()> {
        client::send(&h.api_socket, &balloon::resize(h.memory_mib, mib)?)
            .await
            .map(drop)
    }

    async fn save_state(&self, h: &VmHandles, dir: &Path, _timeout: Duration) -> Result<()> {
        // Firecracker answers when both files are written; a jailed one
        // writes them inside its chroot, whence they move to `dir`.
        match self.jail_of(h) {
            Some(jl) => {
                let inside = Path::new(jail::inner::STATE_DIR);
                client::send(&h.api_socket, &api::snapshot_create(inside)?).await?;
                jl.move_state_out(dir)
            }
            None => client::send(&h.api_socket, &api::snapshot_create(dir)?)
                .await
                .map(drop),
        }
    }

    async fn finish_restore(&self, h: &VmHandles, _timeout: Duration) -> Result<()> {
        // The load happened in spawn (it answers once loaded); run it.
        self.resume(h).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_error_is_the_reason_not_the_farewell() {
        // As `child::Started::output` gives it: lines joined by "; ".
        let printed = "old boot output; \
             2026-12-01T08:58:41.800375055 [x:main] Running Firecracker v1.16.1; \
             2026-12-01T08:58:41.800673545 [x:main] RunWithApiError error: Failed to bind (os error 2); \
             Error: RunWithApi(FailedToBindAndRunHttpServer(IOError(..))); \
             2026-12-01T08:58:41.800943812 [x:main] Firecracker exiting with error. exit_code=1";
        assert_eq!(
            startup_error(printed),
            "RunWithApiError error: Failed to bind (os error 2)"
        );
        assert_eq!(startup_error(""), "(no output)");
    }
}

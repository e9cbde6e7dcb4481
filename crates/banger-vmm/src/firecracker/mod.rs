//! Firecracker driver.
//!
//! Starts `firecracker --api-sock` detached in its own session with its
//! stdout (the guest serial console) going to the console log, then
//! configures the VM through [`api`] and starts it. The agent is reached
//! over hybrid vsock: the host side is the Unix socket `agent_socket`,
//! where `CONNECT 1024` reaches the agent's AF_VSOCK listener.
//!
//! Not exercised end to end on the development machines (no Firecracker
//! binary, and their PVM KVM cannot boot standard kernels); the request
//! bodies are validated against `firecracker.yaml` in tests.

pub mod api;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use banger_proto::client::{AgentClient, hybrid_vsock_connect};

use crate::spec::{LaunchSpec, VmHandles};
use crate::{Driver, Result, StopHow, VmmError, process, wait_exit};

/// The Firecracker driver.
#[derive(Debug, Clone)]
pub struct FirecrackerDriver {
    /// `firecracker` or a path to it.
    pub binary: String,
}

impl Default for FirecrackerDriver {
    fn default() -> Self {
        FirecrackerDriver {
            binary: "firecracker".into(),
        }
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VmmError {
    let path = path.display().to_string();
    move |source| VmmError::Io { op, path, source }
}

impl Driver for FirecrackerDriver {
    fn name(&self) -> &'static str {
        "firecracker"
    }

    async fn spawn(&self, spec: &LaunchSpec) -> Result<VmHandles> {
        spec.validate()?;
        std::fs::create_dir_all(&spec.run_dir).map_err(io("create", &spec.run_dir))?;
        for s in [&spec.agent_socket, &spec.api_socket] {
            match std::fs::remove_file(s) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove", s)(e));
                }
                _ => {}
            }
        }
        // Firecracker opens (not creates) its log and metrics files.
        for f in ["firecracker.log", "metrics.json"] {
            let p = spec.run_dir.join(f);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(io("create", &p))?;
        }
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.console_log)
            .map_err(io("open", &spec.console_log))?;
        let console_err = console.try_clone().map_err(io("dup", &spec.console_log))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--api-sock")
            .arg(&spec.api_socket)
            .arg("--id")
            .arg(format!("banger-{}", spec.name))
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err);
        // SAFETY: setsid is async-signal-safe; it detaches the VMM from the
        // daemon's session so terminal signals and the daemon's exit do not
        // reach it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| VmmError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let pid =
            i32::try_from(child.id()).map_err(|_| VmmError::InvalidSpec("pid overflow".into()))?;
        let pid_start_time = process::start_time(pid).map_err(io("stat", Path::new("/proc")))?;
        // Reap it when it ends while we live; after a daemon restart it is
        // init's child and init reaps it.
        std::thread::spawn(move || child.wait());
        let handles = VmHandles {
            driver: self.name().into(),
            pid,
            pid_start_time,
            api_socket: spec.api_socket.clone(),
            agent_socket: spec.agent_socket.clone(),
            console_log: spec.console_log.clone(),
        };
        let configure = async {
            crate::connect_unix(&spec.api_socket, Duration::from_secs(5)).await?;
            for req in api::launch_requests(spec) {
                api::send(&spec.api_socket, &req).await?;
            }
            Ok(())
        };
        if let Err(e) = configure.await {
            let _ = self.kill(&handles);
            return Err(e);
        }
        Ok(handles)
    }

    async fn connect_agent(&self, h: &VmHandles, timeout: Duration) -> Result<AgentClient> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Until the guest listens, Firecracker refuses CONNECT by closing the
        // stream; retry until the deadline.
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = async {
                let s = crate::connect_unix(&h.agent_socket, left).await?;
                let s = hybrid_vsock_connect(s, banger_proto::VSOCK_PORT)
                    .await
                    .map_err(VmmError::Agent)?;
                AgentClient::connect(s).await.map_err(VmmError::Agent)
            };
            match tokio::time::timeout(left, attempt).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(VmmError::Timeout(timeout, "the guest agent")),
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
            StopHow::Vmm => api::send(&h.api_socket, &api::action(api::ActionType::SendCtrlAltDel))
                .await
                .is_ok(),
        };
        if asked && wait_exit(h, timeout).await {
            return Ok(true);
        }
        self.kill(h)?;
        wait_exit(h, Duration::from_secs(5)).await;
        Ok(false)
    }
}

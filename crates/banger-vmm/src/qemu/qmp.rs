//! A small QMP client: JSON lines over the monitor's Unix socket.
//!
//! QMP is a greeting, a `qmp_capabilities` handshake, then one
//! `{"execute": …}` per line answered by `{"return": …}` or
//! `{"error": …}`, with asynchronous `{"event": …}` lines interleaved,
//! which we skip. We only need a handful of commands, so a generated
//! binding (qapi crate) would be more weight than help.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::{Result, VmmError};

/// The name a saved state's descriptor has in QEMU while it migrates.
const MIGRATION_FD: &str = "banger-state";

/// A QMP session after the capabilities handshake.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let stream = crate::connect_unix(path, timeout).await?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = qmp.read_msg().await?;
        if greeting.get("QMP").is_none() {
            return Err(VmmError::Qmp(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Reads until the answer to `command`, skipping events.
    async fn answer(&mut self, command: &str) -> Result<Value> {
        loop {
            let msg = self.read_msg().await?;
            if let Some(r) = msg.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = msg.get("error") {
                return Err(VmmError::Qmp(format!("{command}: {e}")));
            }
            // An event: not our answer.
        }
    }

    async fn read_msg(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(|e| VmmError::Qmp(format!("read: {e}")))?;
        if n == 0 {
            return Err(VmmError::Qmp("connection closed".into()));
        }
        serde_json::from_str(&line).map_err(|e| VmmError::Qmp(format!("bad json {line:?}: {e}")))
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut req = json!({ "execute": command });
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        let mut line = req.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| VmmError::Qmp(format!("write: {e}")))?;
        self.answer(command).await
    }

    /// `getfd`: hands QEMU `fd` (SCM_RIGHTS with the command) under
    /// `name`, for a later `fd:NAME` URI.
    pub async fn getfd(&mut self, name: &str, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        use std::io::IoSlice;
        use std::mem::MaybeUninit;
        let line = format!(
            "{}\n",
            json!({ "execute": "getfd", "arguments": { "fdname": name } })
        );
        let stream: &tokio::net::UnixStream = self.writer.as_ref();
        let sent = loop {
            stream
                .writable()
                .await
                .map_err(|e| VmmError::Qmp(format!("write: {e}")))?;
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut anc = SendAncillaryBuffer::new(&mut space);
            let fds = [fd];
            anc.push(SendAncillaryMessage::ScmRights(&fds));
            let r = stream.try_io(tokio::io::Interest::WRITABLE, || {
                rustix::net::sendmsg(
                    stream,
                    &[IoSlice::new(line.as_bytes())],
                    &mut anc,
                    SendFlags::NOSIGNAL,
                )
                .map_err(std::io::Error::from)
            });
            match r {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(VmmError::Qmp(format!("send a descriptor: {e}"))),
            }
        };
        // The descriptor went with the first byte; the rest is plain.
        self.writer
            .write_all(&line.as_bytes()[sent..])
            .await
            .map_err(|e| VmmError::Qmp(format!("write: {e}")))?;
        self.answer("getfd").await.map(drop)
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown` …).
    pub async fn status(&mut self) -> Result<String> {
        let v = self.execute("query-status", None).await?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_owned())
    }

    /// `stop`: pause the vCPUs (QEMU's vm clock stops with them).
    pub async fn pause(&mut self) -> Result<()> {
        self.execute("stop", None).await.map(drop)
    }

    /// `cont`: run the vCPUs again.
    pub async fn resume(&mut self) -> Result<()> {
        self.execute("cont", None).await.map(drop)
    }

    /// Sets migration capabilities (`migrate-set-capabilities`).
    pub async fn set_capability(&mut self, capability: &str, state: bool) -> Result<()> {
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": [{ "capability": capability, "state": state }] })),
        )
        .await
        .map(drop)
    }

    /// `migrate` the VM state into `file` (created, or truncated) through
    /// a descriptor QEMU is handed (`getfd`, then an `fd:NAME` URI: no
    /// `exec:`, which QEMU's sandbox forbids), and wait until QEMU says it
    /// completed. The first step of a snapshot: the caller pauses first, so
    /// the state is one point in time; QEMU leaves the source VM paused
    /// afterwards. Restored by a QEMU started with `-incoming defer` and
    /// [`Qmp::migrate_incoming`].
    pub async fn migrate_to_file(&mut self, file: &Path, timeout: Duration) -> Result<()> {
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(file)
            .map_err(|e| VmmError::Io {
                op: "create",
                path: file.display().to_string(),
                source: e,
            })?;
        self.getfd(MIGRATION_FD, std::os::fd::AsFd::as_fd(&out))
            .await?;
        // QEMU holds its own copy now.
        drop(out);
        self.execute(
            "migrate",
            Some(json!({ "uri": format!("fd:{MIGRATION_FD}") })),
        )
        .await
        .map(drop)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.execute("query-migrate", None).await?;
            match v["status"].as_str().unwrap_or("") {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(VmmError::Qmp(format!(
                        "migrate to {}: {}",
                        file.display(),
                        v["error-desc"].as_str().unwrap_or("failed")
                    )));
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    let _ = self.execute("migrate_cancel", None).await;
                    return Err(VmmError::Timeout(timeout, "the migration to a file"));
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Starts loading a saved state from descriptor `fd`, which QEMU
    /// inherited under that number, into a QEMU started with `-incoming
    /// defer`. The load runs on in QEMU (`inmigrate`, then `paused` under
    /// `-S`).
    pub async fn migrate_incoming(&mut self, fd: i32) -> Result<()> {
        self.execute(
            "migrate-incoming",
            Some(json!({ "uri": format!("fd:{fd}") })),
        )
        .await
        .map(drop)
    }

    /// Ends an outgoing migration that its client abandoned (a daemon
    /// killed mid-save) and waits until QEMU reports it over. Needed before
    /// a `cont`: a migration still running when the guest is resumed
    /// stops it again when it completes, leaving the VM in `postmigrate`
    /// (frozen) although everyone was told it runs.
    pub async fn end_migration(&mut self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut cancelled = false;
        loop {
            let v = self.execute("query-migrate", None).await?;
            // No status at all: no migration ever ran in this QEMU.
            match v["status"].as_str() {
                None | Some("none" | "completed" | "failed" | "cancelled") => return Ok(()),
                Some(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(VmmError::Timeout(timeout, "an abandoned migration to end"));
                }
                Some(_) => {
                    if !cancelled {
                        self.execute("migrate_cancel", None).await?;
                        cancelled = true;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// `system_powerdown`: press the ACPI power button.
    pub async fn powerdown(&mut self) -> Result<()> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `quit`: end QEMU now.
    pub async fn quit(&mut self) -> Result<()> {
        // QEMU may close the socket before or after answering.
        match self.execute("quit", None).await {
            Ok(_) => Ok(()),
            Err(VmmError::Qmp(m)) if m.contains("closed") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A scripted QMP server: greeting, then answers, with an event in
    /// between that the client must skip.
    #[tokio::test]
    async fn handshake_skips_events_and_maps_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"{\"QMP\":{\"version\":{},\"capabilities\":[]}}\n")
                .await
                .unwrap();
            let mut seen = Vec::new();
            let mut line = String::new();
            for reply in [
                "{\"return\":{}}\n",
                "{\"event\":\"RESUME\"}\n{\"return\":{\"status\":\"running\",\"running\":true}}\n",
                "{\"error\":{\"class\":\"GenericError\",\"desc\":\"nope\"}}\n",
            ] {
                line.clear();
                r.read_line(&mut line).await.unwrap();
                seen.push(serde_json::from_str::<Value>(&line).unwrap());
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        });
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        assert_eq!(qmp.status().await.unwrap(), "running");
        let err = qmp.powerdown().await.unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let seen = server.await.unwrap();
        assert_eq!(seen[0]["execute"], "qmp_capabilities");
        assert_eq!(seen[1]["execute"], "query-status");
        assert_eq!(seen[2]["execute"], "system_powerdown");
    }

    /// A migration left running is cancelled once, then waited for; one
    /// already over, or none at all, is left alone.
    #[tokio::test]
    async fn an_abandoned_migration_is_cancelled_and_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let mut commands = Vec::new();
            for replies in [
                &[
                    "{\"return\":{}}",
                    "{\"return\":{\"status\":\"active\"}}",
                    "{\"return\":{}}",
                    "{\"return\":{\"status\":\"cancelling\"}}",
                    "{\"return\":{\"status\":\"cancelled\"}}",
                ][..],
                &["{\"return\":{}}", "{\"return\":{}}"][..],
            ] {
                let (s, _) = listener.accept().await.unwrap();
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"{\"QMP\":{}}\n").await.unwrap();
                for reply in replies {
                    let mut line = String::new();
                    r.read_line(&mut line).await.unwrap();
                    let v: Value = serde_json::from_str(&line).unwrap();
                    commands.push(v["execute"].as_str().unwrap().to_owned());
                    w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
                }
            }
            commands
        });
        for _ in 0..2 {
            let mut q = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
            q.end_migration(Duration::from_secs(5)).await.unwrap();
        }
        assert_eq!(
            server.await.unwrap(),
            [
                "qmp_capabilities",
                "query-migrate",
                "migrate_cancel",
                "query-migrate",
                "query-migrate",
                "qmp_capabilities",
                "query-migrate",
            ]
        );
    }
}

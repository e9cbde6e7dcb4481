//! The helper's server loop: accept, authenticate the peer by SO_PEERCRED
//! (the kernel's word on the caller's uid, which a client cannot forge),
//! then answer request lines until the client hangs up. Only the owner
//! uid named at start and root are served; every operation then passes
//! the [`crate::Policy`] inside [`InProcess`]. Errors go back as one line.

use std::error::Error as _;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};

use crate::HelperError;
use crate::InProcess;
use crate::host::HostNetwork;
use crate::proto::{HelperOp, PROTOCOL_VERSION, Request, Response, WireError};
use crate::wire::Conn;

/// Bind the helper socket at `path`, mode 0666, in a directory others can
/// traverse; a stale socket from a previous run is replaced, anything
/// else at that path is refused.
///
/// Any uid may connect; who is served is decided per connection by
/// SO_PEERCRED ([`serve`]), before a byte of the request is read, so a
/// stranger gets a clear refusal and nothing of it is parsed. Handing the
/// socket to the owner by file mode instead would need CAP_CHOWN, which
/// the unit's sandbox does not grant.
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent()
        && !dir.is_dir()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serve connections until the listener fails.
pub async fn serve(listener: UnixListener, exec: Arc<InProcess>, owner: u32) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let exec = exec.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &exec, owner).await {
                tracing::warn!("helper connection: {e}");
            }
        });
    }
}

fn wire_error(e: &HelperError) -> Response {
    // The client cannot rebuild the source chain, so send all of it.
    let mut message = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    Response::Err(WireError {
        kind: e.kind(),
        message: message.replace('\n', "; "),
        protocol: PROTOCOL_VERSION,
    })
}

async fn send(conn: &Conn, resp: &Response, fds: &[std::os::fd::RawFd]) -> io::Result<()> {
    let line = serde_json::to_vec(resp).map_err(io::Error::other)?;
    conn.write_line(&line, fds).await
}

async fn handle(stream: UnixStream, exec: &InProcess, owner: u32) -> io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let mut conn = Conn::new(stream);
    if uid != 0 && uid != owner {
        tracing::warn!(uid, "refused a connection from a uid that is not served");
        let e = HelperError::Forbidden { uid, owner };
        return send(&conn, &wire_error(&e), &[]).await;
    }
    // Descriptors a client sends are dropped (closed) with the line.
    while let Some((line, _fds)) = conn.read_line().await? {
        let op = match parse(&line) {
            Ok(op) => op,
            Err(e) => {
                send(&conn, &wire_error(&e), &[]).await?;
                continue;
            }
        };
        let name = op_name(&op);
        match exec.call(op).await {
            Ok(out) => {
                tracing::debug!(uid, op = name, "done");
                let raw: Vec<_> = out.fds.iter().map(|f| f.as_raw_fd()).collect();
                send(&conn, &Response::Ok(out.reply), &raw).await?;
            }
            Err(e) => {
                tracing::warn!(uid, op = name, "failed: {e}");
                send(&conn, &wire_error(&e), &[]).await?;
            }
        }
    }
    Ok(())
}

/// The protocol version is read before the operation, so a request from
/// another release gets a version error rather than a parse error.
fn parse(line: &[u8]) -> Result<HelperOp, HelperError> {
    let v: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| HelperError::Protocol(format!("request is not JSON: {e}")))?;
    let protocol = v.get("protocol").and_then(|p| p.as_u64());
    if protocol != Some(u64::from(PROTOCOL_VERSION)) {
        return Err(HelperError::VersionMismatch {
            helper: PROTOCOL_VERSION,
            client: protocol.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        });
    }
    // A banger-shaped op with a foreign name (eth0) or a field the
    // helper does not take (a network, a target) fails here.
    let req: Request =
        serde_json::from_value(v).map_err(|e| HelperError::Refused(e.to_string()))?;
    Ok(req.op)
}

fn op_name(op: &HelperOp) -> &'static str {
    match op {
        HelperOp::Version {} => "version",
        HelperOp::EnsureNetwork {} => "ensure_network",
        HelperOp::RemoveNetwork {} => "remove_network",
        HelperOp::CreateTap { .. } => "create_tap",
        HelperOp::DeleteTap { .. } => "delete_tap",
        HelperOp::OpenTap { .. } => "open_tap",
        HelperOp::ListTaps {} => "list_taps",
        HelperOp::AllowResolved { .. } => "allow_resolved",
        HelperOp::BindDns {} => "bind_dns",
        HelperOp::Status {} => "status",
    }
}

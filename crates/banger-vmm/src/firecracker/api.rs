//! Typed Firecracker API requests and a client over its Unix socket.
//!
//! Each request body is a struct mirroring one definition of Firecracker's
//! `firecracker.yaml` (`deny_unknown_fields` on our side, optional fields
//! skipped when unset); `tests/firecracker_schema.rs` validates every body
//! [`launch_requests`] builds against that file. Requests go out with hyper
//! 1 over a fresh `UnixStream`, with a `Content-Length` body: Firecracker's
//! micro HTTP server does not accept chunked bodies.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use crate::spec::{DiskRole, LaunchSpec};
use crate::{Result, VmmError};

/// `PUT /machine-config` (`MachineConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// vCPUs (1 or an even number, at most 32).
    pub vcpu_count: u8,
    /// Memory in MiB.
    pub mem_size_mib: u32,
    /// Simultaneous multithreading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
}

/// `PUT /boot-source` (`BootSource`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Kernel on the host.
    pub kernel_image_path: String,
    /// Kernel command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Initrd on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// `PUT /drives/{drive_id}` (`Drive`, virtio-block form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Id, also in the path.
    pub drive_id: String,
    /// Always false: the root is assembled by the agent, not the kernel.
    pub is_root_device: bool,
    /// Image on the host.
    pub path_on_host: String,
    /// Read-only to the guest.
    pub is_read_only: bool,
    /// `Sync` or `Async` (io_uring).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<String>,
}

/// `PUT /network-interfaces/{iface_id}` (`NetworkInterface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Id, also in the path.
    pub iface_id: String,
    /// Host tap.
    pub host_dev_name: String,
    /// Guest MAC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// `PUT /vsock` (`Vsock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Guest CID (>= 3).
    pub guest_cid: u32,
    /// Host socket of the hybrid vsock.
    pub uds_path: String,
}

/// `PUT /logger` (`Logger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// Log file (must exist).
    pub log_path: String,
    /// `Error`, `Warning`, `Info`, `Debug`, `Trace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Prefix lines with the level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
}

/// `PUT /metrics` (`Metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Metrics file (must exist).
    pub metrics_path: String,
}

/// `InstanceActionInfo.action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Boot the configured VM.
    InstanceStart,
    /// Press Ctrl+Alt+Del (i8042): a graceful-shutdown request to init.
    SendCtrlAltDel,
    /// Flush metrics now.
    FlushMetrics,
}

/// `PUT /actions` (`InstanceActionInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The action.
    pub action_type: ActionType,
}

/// One API call, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// `PUT`, `PATCH`, `GET`.
    pub method: &'static str,
    /// Request path, e.g. `/drives/banger-base`.
    pub path: String,
    /// JSON body.
    pub body: serde_json::Value,
}

fn put(path: impl Into<String>, body: &impl Serialize) -> ApiRequest {
    ApiRequest {
        method: "PUT",
        path: path.into(),
        // Serializing these plain structs cannot fail.
        body: serde_json::to_value(body).unwrap_or_default(),
    }
}

/// The guest device path of a disk: Firecracker attaches drives in the
/// order they are configured, so the n-th drive is `/dev/vd{a+n}`.
fn device_of(index: usize) -> String {
    let letter = char::from(b'a' + u8::try_from(index).unwrap_or(25).min(25));
    format!("/dev/vd{letter}")
}

/// The kernel command line under Firecracker.
pub fn cmdline(spec: &LaunchSpec) -> String {
    // pci=off: no PCI bus on Firecracker; probing for one costs boot time.
    let mut c = String::from("console=ttyS0 quiet reboot=k panic=1 pci=off");
    for (i, d) in spec.disks.iter().enumerate() {
        c.push_str(&format!(" {}={}", d.role.param(), device_of(i)));
    }
    if !spec.extra_cmdline.is_empty() {
        c.push(' ');
        c.push_str(&spec.extra_cmdline);
    }
    c
}

/// Every request that configures and starts the VM of `spec`, in order.
pub fn launch_requests(spec: &LaunchSpec) -> Vec<ApiRequest> {
    let p = |p: &Path| p.display().to_string();
    let mut r = vec![
        put(
            "/logger",
            &Logger {
                log_path: p(&spec.run_dir.join("firecracker.log")),
                level: Some("Warning".into()),
                show_level: Some(true),
            },
        ),
        put(
            "/metrics",
            &Metrics {
                metrics_path: p(&spec.run_dir.join("metrics.json")),
            },
        ),
        put(
            "/machine-config",
            &MachineConfig {
                vcpu_count: spec.vcpus,
                mem_size_mib: spec.memory_mib,
                smt: Some(false),
            },
        ),
        put(
            "/boot-source",
            &BootSource {
                kernel_image_path: p(&spec.kernel),
                boot_args: Some(cmdline(spec)),
                initrd_path: spec.initramfs.as_deref().map(p),
            },
        ),
    ];
    for d in &spec.disks {
        let id = d.role.id();
        r.push(put(
            format!("/drives/{id}"),
            &Drive {
                drive_id: id.into(),
                is_root_device: false,
                path_on_host: p(&d.path),
                is_read_only: d.read_only || d.role == DiskRole::Base,
                io_engine: None,
            },
        ));
    }
    if let Some(tap) = &spec.tap {
        r.push(put(
            "/network-interfaces/eth0",
            &NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: tap.clone(),
                guest_mac: spec.mac.clone(),
            },
        ));
    }
    r.push(put(
        "/vsock",
        &Vsock {
            guest_cid: spec.vsock_cid.unwrap_or(3),
            uds_path: p(&spec.agent_socket),
        },
    ));
    r.push(action(ActionType::InstanceStart));
    r
}

/// `PUT /actions` with `action_type`.
pub fn action(action_type: ActionType) -> ApiRequest {
    put("/actions", &Action { action_type })
}

/// Sends one request on a fresh connection; returns the status and body,
/// or [`VmmError::Api`] for a non-2xx answer.
pub async fn send(socket: &Path, req: &ApiRequest) -> Result<(u16, Bytes)> {
    let io_err = |op| {
        let path = socket.display().to_string();
        move |e: std::io::Error| VmmError::Io {
            op,
            path,
            source: e,
        }
    };
    let http = |e: hyper::Error| VmmError::Io {
        op: "http",
        path: socket.display().to_string(),
        source: std::io::Error::other(e),
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(io_err("connect"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let body = serde_json::to_vec(&req.body).unwrap_or_default();
    let request = Request::builder()
        .method(req.method)
        .uri(&req.path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| VmmError::InvalidSpec(format!("request {}: {e}", req.path)))?;
    let resp = sender.send_request(request).await.map_err(http)?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
    if !(200..300).contains(&status) {
        return Err(VmmError::Api {
            method: req.method,
            path: req.path.clone(),
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn disks_are_named_by_attach_order() {
        assert_eq!(device_of(0), "/dev/vda");
        assert_eq!(device_of(2), "/dev/vdc");
    }

    /// The bytes on the wire: a Content-Length body, no chunking.
    #[tokio::test]
    async fn sends_content_length_and_maps_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for reply in [
                "HTTP/1.1 204 No Content\r\n\r\n",
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 24\r\n\r\n{\"fault_message\":\"bad\"}\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                // Read until the header and the whole body are in.
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(h) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap();
                        if got.len() >= h + 4 + len {
                            break;
                        }
                    }
                }
                s.write_all(reply.as_bytes()).await.unwrap();
                seen.push(String::from_utf8(got).unwrap());
            }
            seen
        });
        let ok = action(ActionType::InstanceStart);
        assert_eq!(send(&sock, &ok).await.unwrap().0, 204);
        let err = send(&sock, &ok).await.unwrap_err();
        assert!(
            matches!(err, VmmError::Api { status: 400, ref body, .. } if body.contains("bad")),
            "{err:?}"
        );
        let seen = server.await.unwrap();
        let first = &seen[0];
        assert!(first.starts_with("PUT /actions HTTP/1.1\r\n"), "{first}");
        assert!(
            first
                .to_ascii_lowercase()
                .contains("content-length: 31\r\n"),
            "{first}"
        );
        assert!(
            !first.to_ascii_lowercase().contains("transfer-encoding"),
            "{first}"
        );
        assert!(
            first.ends_with("{\"action_type\":\"InstanceStart\"}"),
            "{first}"
        );
    }
}

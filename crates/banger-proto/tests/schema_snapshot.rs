//! Pins the wire format: one example of every control message as JSON, and
//! the exact bytes of a data frame. A change here is a protocol change:
//! review the snapshot diff, and bump `PROTOCOL_VERSION` unless it is
//! purely additive. Update with `INSTA_UPDATE=always cargo test -p banger-proto`.

use banger_proto::{
    CpuTimes, DiskUsage, ExecRequest, ExitStatus, Frame, FrameKind, GuestIdentity, GuestNet,
    GuestStats, ListeningPort, MemoryStats, Message, PROTOCOL_VERSION, TtySize,
};

fn every_message() -> Vec<Message> {
    vec![
        Message::Hello {
            protocol_version: 1,
            capabilities: vec!["flow_control".into()],
        },
        Message::Ready {
            agent_version: "0.1.0".into(),
            protocol_version: 1,
            capabilities: banger_proto::caps::AGENT
                .iter()
                .map(|c| c.to_string())
                .collect(),
        },
        Message::Ping { nonce: 7 },
        Message::Pong { nonce: 7 },
        Message::Exec(ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("TERM".into(), "dumb".into())],
            cwd: Some("/root".into()),
            user: Some("app:staff".into()),
            tty: Some(TtySize { rows: 24, cols: 80 }),
            stdin: true,
        }),
        Message::Started { pid: 42 },
        Message::StdinClose,
        Message::Resize(TtySize {
            rows: 50,
            cols: 132,
        }),
        Message::Signal { signal: 15 },
        Message::Exited(ExitStatus::Code { code: 3 }),
        Message::Exited(ExitStatus::Signaled { signal: 9 }),
        Message::Error {
            message: "spawn x: not found".into(),
        },
        Message::NotStarted {
            message: "x: executable file not found in PATH".into(),
            exit_code: 127,
        },
        Message::Shutdown { reboot: false },
        Message::ShutdownAck,
        Message::Credit { bytes: 131072 },
        Message::TcpConnect {
            port: 22,
            host: None,
        },
        Message::TcpConnect {
            port: 8080,
            host: Some("10.0.0.2".into()),
        },
        Message::CopyIn {
            dest: "/root/src".into(),
        },
        Message::CopyOut {
            path: "/etc/hosts".into(),
            one_file_system: false,
        },
        Message::CopyOut {
            path: "/".into(),
            one_file_system: true,
        },
        Message::Ports,
        Message::Stats,
        Message::Opened,
        Message::Eof,
        Message::Done,
        Message::Abort,
        Message::PortList {
            ports: vec![
                ListeningPort {
                    proto: "tcp".into(),
                    address: "0.0.0.0".into(),
                    port: 22,
                    pid: Some(210),
                    process: Some("sshd".into()),
                },
                ListeningPort {
                    proto: "udp6".into(),
                    address: "::".into(),
                    port: 5353,
                    pid: None,
                    process: None,
                },
            ],
        },
        Message::StatsReport(GuestStats {
            uptime_ms: 12_500,
            cpus: 2,
            memory: MemoryStats {
                total_bytes: 268_435_456,
                available_bytes: 200_000_000,
                used_bytes: 68_435_456,
            },
            cpu: CpuTimes {
                user_ms: 1200,
                system_ms: 800,
                idle_ms: 20_000,
                steal_ms: 0,
            },
            disks: vec![DiskUsage {
                path: "/".into(),
                total_bytes: 8_589_934_592,
                used_bytes: 1_073_741_824,
                available_bytes: 7_000_000_000,
            }],
        }),
        Message::Identity(GuestIdentity {
            hostname: "web2".into(),
            realtime_ns: 1_796_040_000_000_000_000,
            entropy_hex: "00ff".repeat(4),
            net: Some(GuestNet {
                mac: "06:00:ac:10:00:03".into(),
                address: "172.16.0.3/24".into(),
                gateway: "172.16.0.1".into(),
            }),
        }),
        Message::IdentitySet,
        Message::SetClock {
            realtime_ns: 1_796_040_000_000_000_000,
        },
        Message::ClockSet {
            was_ns: 1_796_039_940_000_000_000,
        },
    ]
}

#[test]
fn control_messages_json() {
    assert_eq!(
        PROTOCOL_VERSION, 1,
        "bumping the version: update this test and the snapshot"
    );
    let lines: Vec<String> = every_message()
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn minimal_exec_uses_defaults() {
    let m: Message = serde_json::from_str(r#"{"type":"exec","argv":["true"]}"#).unwrap();
    assert_eq!(
        m,
        Message::Exec(ExecRequest {
            argv: vec!["true".into()],
            env: vec![],
            cwd: None,
            user: None,
            tty: None,
            stdin: false,
        })
    );
}

/// What older peers send still reads: a `Hello` and a `Ready` from before
/// capability lists.
#[test]
fn messages_without_capabilities_still_decode() {
    let hello: Message = serde_json::from_str(r#"{"type":"hello","protocol_version":1}"#).unwrap();
    assert_eq!(
        hello,
        Message::Hello {
            protocol_version: 1,
            capabilities: vec![]
        }
    );
    let ready: Message =
        serde_json::from_str(r#"{"type":"ready","agent_version":"0.0.9","protocol_version":1}"#)
            .unwrap();
    assert!(matches!(ready, Message::Ready { capabilities, .. } if capabilities.is_empty()));
}

#[test]
fn frame_bytes() {
    let hex = |f: &Frame| {
        f.encode()
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let data = Frame::Data {
        stream: 5,
        kind: FrameKind::Stdout,
        data: b"ok\n".to_vec(),
    };
    let ping = Frame::control(0, Message::Ping { nonce: 1 });
    insta::assert_snapshot!(format!("{}\n{}", hex(&data), hex(&ping)));
}

//! Pins the wire format: one example of every control message as JSON, and
//! the exact bytes of a data frame. A change here is a protocol change:
//! review the snapshot diff, and bump `PROTOCOL_VERSION` unless it is
//! purely additive. Update with `INSTA_UPDATE=always cargo test -p banger-proto`.

use banger_proto::{ExecRequest, ExitStatus, Frame, FrameKind, Message, PROTOCOL_VERSION, TtySize};

fn every_message() -> Vec<Message> {
    vec![
        Message::Hello {
            protocol_version: 1,
        },
        Message::Ready {
            agent_version: "0.1.0".into(),
            protocol_version: 1,
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
        Message::Shutdown { reboot: false },
        Message::ShutdownAck,
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

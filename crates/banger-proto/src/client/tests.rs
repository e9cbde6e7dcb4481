//! Unit tests of the client against a scripted agent.

use super::*;
use crate::flow::{INITIAL_WINDOW, MAX_CHUNK};
use crate::{ExecRequest, ExitStatus, ListeningPort};
use tokio::io::DuplexStream;

async fn send(w: &mut DuplexStream, f: Frame) {
    w.write_all(&f.encode().unwrap()).await.unwrap();
}

async fn recv(r: &mut DuplexStream) -> Frame {
    read_frame_async(r).await.unwrap().expect("a frame")
}

/// Connects a client to a scripted agent (of this crate's capabilities) at
/// the other end of a pipe.
async fn pair() -> (AgentClient, DuplexStream) {
    pair_with(caps::AGENT).await
}

/// Connects a client to a scripted agent listing `capabilities`.
async fn pair_with(capabilities: &'static [&'static str]) -> (AgentClient, DuplexStream) {
    let (host, mut agent) = tokio::io::duplex(1 << 20);
    let fake = tokio::spawn(async move {
        match recv(&mut agent).await {
            Frame::Control {
                message:
                    Message::Hello {
                        protocol_version,
                        capabilities,
                    },
                ..
            } => {
                assert_eq!(protocol_version, PROTOCOL_VERSION);
                assert_eq!(capabilities, ["flow_control"]);
            }
            other => panic!("expected hello, got {other:?}"),
        }
        // Stale output of an earlier session is skipped by the handshake.
        send(
            &mut agent,
            Frame::Data {
                stream: 9,
                kind: FrameKind::Stdout,
                data: b"old".to_vec(),
            },
        )
        .await;
        send(
            &mut agent,
            Frame::control(
                0,
                Message::Ready {
                    agent_version: "t".into(),
                    protocol_version: PROTOCOL_VERSION,
                    capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
                },
            ),
        )
        .await;
        agent
    });
    let client = AgentClient::connect(host).await.unwrap();
    (client, fake.await.unwrap())
}

fn exec_of(f: &Frame) -> u32 {
    match f {
        Frame::Control {
            stream,
            message: Message::Exec(_),
        } => *stream,
        other => panic!("expected exec, got {other:?}"),
    }
}

#[tokio::test]
async fn interleaved_execs_are_demultiplexed() {
    let (client, mut agent) = pair().await;
    assert_eq!(client.agent_version(), "t");
    let c1 = client.clone();
    let first = tokio::spawn(async move {
        c1.exec(ExecRequest {
            argv: vec!["a".into()],
            env: vec![],
            cwd: None,
            user: None,
            tty: None,
            stdin: true,
        })
        .await
    });
    let a = exec_of(&recv(&mut agent).await);
    send(&mut agent, Frame::control(a, Message::Started { pid: 10 })).await;
    let ha = first.await.unwrap().unwrap();
    assert_eq!(ha.pid(), 10);

    let c2 = client.clone();
    let second = tokio::spawn(async move {
        c2.exec(ExecRequest {
            argv: vec!["b".into()],
            env: vec![],
            cwd: None,
            user: None,
            tty: None,
            stdin: false,
        })
        .await
    });
    let b = exec_of(&recv(&mut agent).await);
    assert_ne!(a, b);
    send(&mut agent, Frame::control(b, Message::Started { pid: 11 })).await;
    let hb = second.await.unwrap().unwrap();

    ha.write_stdin(b"in").await.unwrap();
    ha.close_stdin().unwrap();
    assert_eq!(
        recv(&mut agent).await,
        Frame::Data {
            stream: a,
            kind: FrameKind::Stdin,
            data: b"in".to_vec()
        }
    );
    assert_eq!(
        recv(&mut agent).await,
        Frame::control(a, Message::StdinClose)
    );

    for (s, k, d) in [
        (b, FrameKind::Stdout, "b1"),
        (a, FrameKind::Stdout, "a1"),
        (b, FrameKind::Stderr, "be"),
        (a, FrameKind::Stdout, "a2"),
    ] {
        send(
            &mut agent,
            Frame::Data {
                stream: s,
                kind: k,
                data: d.into(),
            },
        )
        .await;
    }
    send(
        &mut agent,
        Frame::control(b, Message::Exited(ExitStatus::Signaled { signal: 9 })),
    )
    .await;
    send(
        &mut agent,
        Frame::control(a, Message::Exited(ExitStatus::Code { code: 3 })),
    )
    .await;
    let ob = hb.output().await.unwrap();
    assert_eq!((ob.stdout, ob.stderr), (b"b1".to_vec(), b"be".to_vec()));
    assert_eq!(ob.status.shell_code(), 137);
    let oa = ha.output().await.unwrap();
    assert_eq!(oa.stdout, b"a1a2");
    assert_eq!(oa.status, ExitStatus::Code { code: 3 });
}

#[tokio::test]
async fn spawn_errors_and_lost_connections_wake_callers() {
    let (client, mut agent) = pair().await;
    let c = client.clone();
    let failing = tokio::spawn(async move {
        c.exec(ExecRequest {
            argv: vec!["nope".into()],
            env: vec![],
            cwd: None,
            user: None,
            tty: None,
            stdin: false,
        })
        .await
    });
    let id = exec_of(&recv(&mut agent).await);
    send(
        &mut agent,
        Frame::control(
            id,
            Message::Error {
                message: "spawn nope".into(),
            },
        ),
    )
    .await;
    assert!(matches!(failing.await.unwrap(), Err(ClientError::Agent(m)) if m == "spawn nope"));

    let c = client.clone();
    let pending = tokio::spawn(async move {
        c.exec(ExecRequest {
            argv: vec!["x".into()],
            env: vec![],
            cwd: None,
            user: None,
            tty: None,
            stdin: false,
        })
        .await
    });
    let id = exec_of(&recv(&mut agent).await);
    send(&mut agent, Frame::control(id, Message::Started { pid: 1 })).await;
    let h = pending.await.unwrap().unwrap();
    // An unknown message type from a newer agent does not end things.
    let junk = br#"{"type":"from_the_future"}"#;
    let mut raw = (5 + u32::try_from(junk.len()).unwrap())
        .to_be_bytes()
        .to_vec();
    raw.extend_from_slice(&id.to_be_bytes());
    raw.push(0);
    raw.extend_from_slice(junk);
    agent.write_all(&raw).await.unwrap();
    let pinger = client.clone();
    let ping = tokio::spawn(async move { pinger.ping().await });
    match recv(&mut agent).await {
        Frame::Control {
            message: Message::Ping { nonce },
            ..
        } => {
            send(&mut agent, Frame::control(0, Message::Pong { nonce })).await;
        }
        other => panic!("expected ping, got {other:?}"),
    }
    ping.await.unwrap().unwrap();
    drop(agent);
    assert!(matches!(h.wait().await, Err(ClientError::Closed)));
    assert!(client.ping().await.is_err());
}

#[tokio::test]
async fn version_mismatch_is_refused() {
    let (host, mut agent) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let _ = recv(&mut agent).await;
        send(
            &mut agent,
            Frame::control(
                0,
                Message::Ready {
                    agent_version: "old".into(),
                    protocol_version: PROTOCOL_VERSION + 1,
                    capabilities: vec![],
                },
            ),
        )
        .await;
        agent
    });
    assert!(matches!(
        AgentClient::connect(host).await,
        Err(ClientError::VersionMismatch { .. })
    ));
}

fn req(argv: &[&str], stdin: bool) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        cwd: None,
        user: None,
        tty: None,
        stdin,
    }
}

/// Starts an exec against the scripted agent; returns the handle and id.
async fn started(client: &AgentClient, agent: &mut DuplexStream, stdin: bool) -> (ExecHandle, u32) {
    let c = client.clone();
    let h = tokio::spawn(async move { c.exec(req(&["x"], stdin)).await });
    let id = exec_of(&recv(agent).await);
    send(agent, Frame::control(id, Message::Started { pid: 5 })).await;
    (h.await.unwrap().unwrap(), id)
}

/// Reads frames until one matches, with a deadline.
async fn expect_frame(agent: &mut DuplexStream, what: impl Fn(&Frame) -> bool) -> Frame {
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let f = recv(agent).await;
            if what(&f) {
                return f;
            }
        }
    })
    .await
    .expect("expected frame in time")
}

#[tokio::test]
async fn stdin_stops_at_the_window_until_the_agent_grants_credit() {
    let (client, mut agent) = pair().await;
    let (h, id) = started(&client, &mut agent, true).await;
    let ctl = h.control();
    let total = INITIAL_WINDOW as usize + 10_000;
    let writer = tokio::spawn(async move { ctl.write_stdin(&vec![7u8; total]).await });
    let mut got = 0usize;
    while got < INITIAL_WINDOW as usize {
        match recv(&mut agent).await {
            Frame::Data { stream, data, .. } if stream == id => got += data.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, INITIAL_WINDOW as usize, "exactly one window sent");
    // Nothing more arrives without credit.
    let more = tokio::time::timeout(std::time::Duration::from_millis(200), recv(&mut agent)).await;
    assert!(more.is_err(), "sent past the window: {more:?}");
    assert!(!writer.is_finished());
    send(
        &mut agent,
        Frame::control(id, Message::Credit { bytes: 10_000 }),
    )
    .await;
    while got < total {
        match recv(&mut agent).await {
            Frame::Data { data, .. } => got += data.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.unwrap().unwrap();
}

#[tokio::test]
async fn output_is_credited_only_as_it_is_consumed_and_a_stalled_stream_stalls_alone() {
    let (client, mut agent) = pair().await;
    let (mut slow, slow_id) = started(&client, &mut agent, false).await;
    let (mut fast, fast_id) = started(&client, &mut agent, false).await;
    // The agent fills the slow stream's window; nobody reads it.
    for _ in 0..(INITIAL_WINDOW as usize / MAX_CHUNK) {
        send(
            &mut agent,
            Frame::Data {
                stream: slow_id,
                kind: FrameKind::Stdout,
                data: vec![1; MAX_CHUNK],
            },
        )
        .await;
    }
    // The other stream on the same connection still flows.
    send(
        &mut agent,
        Frame::Data {
            stream: fast_id,
            kind: FrameKind::Stdout,
            data: b"fast".to_vec(),
        },
    )
    .await;
    let mut fast_out = fast.stdout().unwrap();
    assert_eq!(fast_out.recv().await.unwrap(), b"fast");

    // No credit for the slow stream until its consumer reads half a window.
    let mut slow_out = slow.stdout().unwrap();
    for _ in 0..(INITIAL_WINDOW as usize / MAX_CHUNK / 2 - 1) {
        slow_out.recv().await.unwrap();
    }
    let early = tokio::time::timeout(std::time::Duration::from_millis(200), recv(&mut agent)).await;
    assert!(
        early.is_err(),
        "credit before half a window was read: {early:?}"
    );
    slow_out.recv().await.unwrap();
    let credit = expect_frame(&mut agent, |f| matches!(f, Frame::Control { .. })).await;
    assert_eq!(
        credit,
        Frame::control(
            slow_id,
            Message::Credit {
                bytes: INITIAL_WINDOW / 2
            }
        )
    );
    // Overrunning the window is a protocol error that ends the stream.
    for _ in 0..=(INITIAL_WINDOW as usize / MAX_CHUNK) {
        send(
            &mut agent,
            Frame::Data {
                stream: fast_id,
                kind: FrameKind::Stdout,
                data: vec![2; MAX_CHUNK],
            },
        )
        .await;
    }
    // The receiver stays alive, unread: dropped, it would consume (and
    // credit) what arrives.
    assert!(matches!(fast.wait().await, Err(ClientError::Protocol(_))));
    drop(fast_out);
    expect_frame(&mut agent, |f| {
        *f == Frame::control(fast_id, Message::Abort)
    })
    .await;
}

#[tokio::test]
async fn unread_output_is_discarded_without_stalling_the_exec() {
    let (client, mut agent) = pair().await;
    let (h, id) = started(&client, &mut agent, false).await;
    let waiter = tokio::spawn(h.wait());
    // Two windows' worth: only possible if dropped output is credited.
    let mut sent = 0;
    while sent < 2 * INITIAL_WINDOW as usize {
        send(
            &mut agent,
            Frame::Data {
                stream: id,
                kind: FrameKind::Stdout,
                data: vec![0; MAX_CHUNK],
            },
        )
        .await;
        sent += MAX_CHUNK;
        if sent % (INITIAL_WINDOW as usize / 2) == 0 {
            expect_frame(&mut agent, |f| matches!(f, Frame::Control { .. })).await;
        }
    }
    send(
        &mut agent,
        Frame::control(id, Message::Exited(ExitStatus::Code { code: 0 })),
    )
    .await;
    assert!(waiter.await.unwrap().unwrap().success());
}

#[tokio::test]
async fn an_agent_without_a_capability_gets_a_clear_error_and_no_message() {
    // An agent from before capability lists: its Ready has none.
    let (client, mut agent) = pair_with(&[]).await;
    assert_eq!(client.capabilities(), ["exec", "pty"]);
    let err = client.tcp_connect(22, None).await.unwrap_err();
    assert!(matches!(
        err,
        ClientError::Unsupported {
            capability: "tcp_connect",
            ..
        }
    ));
    let text = err.to_string();
    assert!(
        text.contains("version t") && text.contains("tcp_connect") && text.contains("restart"),
        "{text}"
    );
    for e in [
        client.copy_in("/root").await.unwrap_err(),
        client.copy_out("/etc").await.unwrap_err(),
        client.ports().await.unwrap_err(),
        client.stats().await.unwrap_err(),
    ] {
        assert!(matches!(e, ClientError::Unsupported { .. }), "{e}");
    }
    // Exec still works, and without flow control no credit is ever sent,
    // however much arrives.
    let (mut h, id) = started(&client, &mut agent, false).await;
    let mut out = h.stdout().unwrap();
    for _ in 0..(2 * INITIAL_WINDOW as usize / MAX_CHUNK) {
        send(
            &mut agent,
            Frame::Data {
                stream: id,
                kind: FrameKind::Stdout,
                data: vec![0; MAX_CHUNK],
            },
        )
        .await;
        out.recv().await.unwrap();
    }
    let credit =
        tokio::time::timeout(std::time::Duration::from_millis(200), recv(&mut agent)).await;
    assert!(credit.is_err(), "credit sent to an old agent: {credit:?}");
}

#[tokio::test]
async fn tcp_stream_half_closes_and_finishes() {
    let (client, mut agent) = pair().await;
    let c = client.clone();
    let opening = tokio::spawn(async move { c.tcp_connect(8080, None).await });
    let id = match recv(&mut agent).await {
        Frame::Control {
            stream,
            message:
                Message::TcpConnect {
                    port: 8080,
                    host: None,
                },
        } => stream,
        other => panic!("{other:?}"),
    };
    send(&mut agent, Frame::control(id, Message::Opened)).await;
    let mut s = opening.await.unwrap().unwrap();
    let tx = s.sender();
    tx.write(b"GET /").await.unwrap();
    tx.close().unwrap();
    assert_eq!(
        recv(&mut agent).await,
        Frame::Data {
            stream: id,
            kind: FrameKind::Stdin,
            data: b"GET /".to_vec()
        }
    );
    assert_eq!(
        recv(&mut agent).await,
        Frame::control(id, Message::StdinClose)
    );
    send(
        &mut agent,
        Frame::Data {
            stream: id,
            kind: FrameKind::Stdout,
            data: b"200".to_vec(),
        },
    )
    .await;
    send(&mut agent, Frame::control(id, Message::Eof)).await;
    let mut rx = s.reader().unwrap();
    assert_eq!(rx.recv().await.unwrap(), b"200");
    assert!(rx.recv().await.is_none(), "eof ends the reader");
    send(&mut agent, Frame::control(id, Message::Done)).await;
    s.finish().await.unwrap();

    // A refused connection is the agent's error; a dropped stream aborts.
    let c = client.clone();
    let opening = tokio::spawn(async move { c.tcp_connect(1, None).await });
    let id = exec_of_any(&recv(&mut agent).await);
    send(
        &mut agent,
        Frame::control(
            id,
            Message::Error {
                message: "connect 127.0.0.1:1: refused".into(),
            },
        ),
    )
    .await;
    assert!(matches!(opening.await.unwrap(), Err(ClientError::Agent(m)) if m.contains("refused")));
    let c = client.clone();
    let opening = tokio::spawn(async move { c.tcp_connect(2, None).await });
    let id = exec_of_any(&recv(&mut agent).await);
    send(&mut agent, Frame::control(id, Message::Opened)).await;
    drop(opening.await.unwrap().unwrap());
    assert_eq!(recv(&mut agent).await, Frame::control(id, Message::Abort));
}

#[tokio::test]
async fn one_shot_requests_answer_on_their_stream() {
    let (client, mut agent) = pair().await;
    let c = client.clone();
    let ports = tokio::spawn(async move { c.ports().await });
    let id = exec_of_any(&recv(&mut agent).await);
    let list = vec![ListeningPort {
        proto: "tcp".into(),
        address: "0.0.0.0".into(),
        port: 22,
        pid: Some(1),
        process: Some("sshd".into()),
    }];
    send(
        &mut agent,
        Frame::control(
            id,
            Message::PortList {
                ports: list.clone(),
            },
        ),
    )
    .await;
    assert_eq!(ports.await.unwrap().unwrap(), list);
}

fn exec_of_any(f: &Frame) -> u32 {
    match f {
        Frame::Control { stream, .. } => *stream,
        other => panic!("expected a control frame, got {other:?}"),
    }
}

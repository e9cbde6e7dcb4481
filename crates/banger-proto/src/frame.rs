//! Frame layout and the blocking codec.

use std::io::{self, Read, Write};

use crate::Message;

/// Largest accepted `len` field. Data chunks are at most 64 KiB in practice;
/// the bound stops a corrupt length from allocating gigabytes.
pub const MAX_FRAME_LEN: u32 = 1 << 20;

/// Bytes after the length field that are not payload: stream id + kind.
const HEADER_AFTER_LEN: u32 = 5;

/// How to read a frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A JSON [`Message`].
    Control = 0,
    /// Raw stdout bytes of an exec (all output of a tty exec).
    Stdout = 1,
    /// Raw stderr bytes of an exec.
    Stderr = 2,
    /// Raw stdin bytes for an exec.
    Stdin = 3,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => FrameKind::Control,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::Stdin,
            _ => return None,
        })
    }
}

/// One unit on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A control message on a stream.
    Control {
        /// Stream id (0 = connection).
        stream: u32,
        /// The message.
        message: Message,
    },
    /// A chunk of a standard stream.
    Data {
        /// Exec id.
        stream: u32,
        /// Which standard stream; never [`FrameKind::Control`].
        kind: FrameKind,
        /// The bytes.
        data: Vec<u8>,
    },
}

impl Frame {
    /// Shorthand for a control frame.
    pub fn control(stream: u32, message: Message) -> Self {
        Frame::Control { stream, message }
    }

    /// The frame's stream id.
    pub fn stream(&self) -> u32 {
        match self {
            Frame::Control { stream, .. } | Frame::Data { stream, .. } => *stream,
        }
    }

    /// Encodes the frame into one buffer, so a writer shared between threads
    /// can emit it with a single `write_all` under its lock.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let (stream, kind, payload): (u32, FrameKind, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Control { stream, message } => (
                *stream,
                FrameKind::Control,
                serde_json::to_vec(message)
                    .map_err(FrameError::Encode)?
                    .into(),
            ),
            Frame::Data { stream, kind, data } => {
                if *kind == FrameKind::Control {
                    return Err(FrameError::DataAsControl);
                }
                (*stream, *kind, data.as_slice().into())
            }
        };
        let len = u32::try_from(payload.len())
            .ok()
            .and_then(|n| n.checked_add(HEADER_AFTER_LEN))
            .filter(|n| *n <= MAX_FRAME_LEN)
            .ok_or(FrameError::TooLarge(payload.len()))?;
        let mut buf = Vec::with_capacity(payload.len() + 9);
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&stream.to_be_bytes());
        buf.push(kind as u8);
        buf.extend_from_slice(&payload);
        Ok(buf)
    }

    /// Decodes a frame from its bytes after the length field.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        if body.len() < HEADER_AFTER_LEN as usize {
            return Err(FrameError::Short(body.len()));
        }
        let stream = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let kind = FrameKind::from_u8(body[4]).ok_or(FrameError::UnknownKind(body[4]))?;
        let payload = &body[5..];
        Ok(match kind {
            FrameKind::Control => Frame::Control {
                stream,
                message: serde_json::from_slice(payload)
                    .map_err(|source| FrameError::Decode { stream, source })?,
            },
            kind => Frame::Data {
                stream,
                kind,
                data: payload.to_vec(),
            },
        })
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying stream failed.
    #[error("frame i/o")]
    Io(#[source] io::Error),
    /// The peer closed the stream in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The length field exceeds [`MAX_FRAME_LEN`].
    #[error("frame length {0} exceeds the limit")]
    LengthTooLarge(u32),
    /// A payload too large to frame.
    #[error("payload of {0} bytes does not fit a frame")]
    TooLarge(usize),
    /// A frame shorter than its fixed header.
    #[error("frame of {0} bytes is shorter than its header")]
    Short(usize),
    /// The kind byte is not one we know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A data frame was built with the control kind.
    #[error("data frame with the control kind")]
    DataAsControl,
    /// A control payload is not a valid (or known) message. The frame
    /// itself was well delimited, so the stream stays usable.
    #[error("invalid control message on stream {stream}")]
    Decode {
        /// The frame's stream id.
        stream: u32,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A message failed to serialize.
    #[error("cannot encode control message")]
    Encode(#[source] serde_json::Error),
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly between
/// frames.
pub fn read_frame(r: &mut impl Read) -> Result<Option<Frame>, FrameError> {
    let mut len = [0u8; 4];
    // Distinguish EOF before the first byte (clean end) from EOF inside.
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::LengthTooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Frame::decode(&body).map(Some)
}

/// Writes one frame with a single `write_all` and flushes.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> Result<(), FrameError> {
    let buf = frame.encode()?;
    w.write_all(&buf).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExecRequest, ExitStatus, TtySize};
    use proptest::prelude::*;

    fn roundtrip(f: &Frame) -> Frame {
        let mut buf = Vec::new();
        write_frame(&mut buf, f).unwrap();
        let mut cur = io::Cursor::new(buf);
        let out = read_frame(&mut cur).unwrap().unwrap();
        assert!(read_frame(&mut cur).unwrap().is_none());
        out
    }

    #[test]
    fn header_layout_is_big_endian_len_stream_kind() {
        let f = Frame::Data {
            stream: 7,
            kind: FrameKind::Stderr,
            data: b"hi".to_vec(),
        };
        assert_eq!(f.encode().unwrap(), [0, 0, 0, 7, 0, 0, 0, 7, 2, b'h', b'i']);
    }

    #[test]
    fn control_roundtrip() {
        let f = Frame::control(
            3,
            Message::Exec(ExecRequest {
                argv: vec!["sh".into(), "-c".into(), "true".into()],
                env: vec![("A".into(), "b".into())],
                cwd: Some("/tmp".into()),
                user: Some("1000:staff".into()),
                tty: Some(TtySize { rows: 24, cols: 80 }),
                stdin: true,
            }),
        );
        assert_eq!(roundtrip(&f), f);
    }

    #[test]
    fn truncated_frame_is_an_error_not_eof() {
        let buf = Frame::control(0, Message::Ping { nonce: 1 })
            .encode()
            .unwrap();
        for cut in 1..buf.len() {
            let err = read_frame(&mut io::Cursor::new(&buf[..cut])).unwrap_err();
            assert!(matches!(err, FrameError::Truncated), "cut {cut}: {err:?}");
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_allocating() {
        let mut buf = (MAX_FRAME_LEN + 1).to_be_bytes().to_vec();
        buf.extend_from_slice(&[0; 5]);
        assert!(matches!(
            read_frame(&mut io::Cursor::new(buf)),
            Err(FrameError::LengthTooLarge(_))
        ));
    }

    #[test]
    fn unknown_kind_and_short_frames_are_rejected() {
        let buf = [0, 0, 0, 5, 0, 0, 0, 1, 9];
        assert!(matches!(
            read_frame(&mut io::Cursor::new(buf)),
            Err(FrameError::UnknownKind(9))
        ));
        let buf = [0, 0, 0, 2, 0, 0];
        assert!(matches!(
            read_frame(&mut io::Cursor::new(buf)),
            Err(FrameError::Short(2))
        ));
    }

    #[test]
    fn data_frame_cannot_claim_control_kind() {
        let f = Frame::Data {
            stream: 1,
            kind: FrameKind::Control,
            data: vec![],
        };
        assert!(matches!(f.encode(), Err(FrameError::DataAsControl)));
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_types_name_their_stream() {
        let decode = |payload: &[u8]| {
            let mut body = vec![0, 0, 0, 9, 0];
            body.extend_from_slice(payload);
            Frame::decode(&body)
        };
        assert_eq!(
            decode(br#"{"type":"ping","nonce":1,"extra":2}"#).unwrap(),
            Frame::control(9, Message::Ping { nonce: 1 })
        );
        assert!(matches!(
            decode(br#"{"type":"teleport"}"#),
            Err(FrameError::Decode { stream: 9, .. })
        ));
    }

    /// After an undecodable control frame the next frame still reads.
    #[test]
    fn stream_survives_an_unknown_message() {
        let mut buf = Vec::new();
        let payload = br#"{"type":"teleport"}"#;
        buf.extend_from_slice(&(5 + u32::try_from(payload.len()).unwrap()).to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 3, 0]);
        buf.extend_from_slice(payload);
        write_frame(&mut buf, &Frame::control(0, Message::Ping { nonce: 2 })).unwrap();
        let mut cur = io::Cursor::new(buf);
        assert!(matches!(
            read_frame(&mut cur),
            Err(FrameError::Decode { stream: 3, .. })
        ));
        assert_eq!(
            read_frame(&mut cur).unwrap(),
            Some(Frame::control(0, Message::Ping { nonce: 2 }))
        );
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let s = "[a-z0-9 /=-]{0,12}";
        prop_oneof![
            (any::<u32>(), prop::collection::vec(s, 0..3)).prop_map(|(v, c)| Message::Hello {
                protocol_version: v,
                capabilities: c
            }),
            (s, any::<u32>(), prop::collection::vec(s, 0..3)).prop_map(|(a, p, c)| {
                Message::Ready {
                    agent_version: a,
                    protocol_version: p,
                    capabilities: c,
                }
            }),
            any::<u32>().prop_map(|bytes| Message::Credit { bytes }),
            (any::<u16>(), prop::option::of(s))
                .prop_map(|(port, host)| Message::TcpConnect { port, host }),
            s.prop_map(|dest| Message::CopyIn { dest }),
            (s, any::<bool>()).prop_map(|(path, one_file_system)| Message::CopyOut {
                path,
                one_file_system,
            }),
            Just(Message::Ports),
            Just(Message::Stats),
            Just(Message::Opened),
            Just(Message::Eof),
            Just(Message::Done),
            Just(Message::Abort),
            any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
            any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
            (
                prop::collection::vec(s, 0..4),
                prop::collection::vec((s, s), 0..3),
                prop::option::of(s),
                prop::option::of((any::<u16>(), any::<u16>())),
                any::<bool>(),
                prop::option::of(s),
            )
                .prop_map(|(argv, env, cwd, tty, stdin, user)| Message::Exec(
                    ExecRequest {
                        argv,
                        env,
                        cwd,
                        user,
                        tty: tty.map(|(rows, cols)| TtySize { rows, cols }),
                        stdin
                    }
                )),
            any::<u32>().prop_map(|pid| Message::Started { pid }),
            Just(Message::StdinClose),
            (any::<u16>(), any::<u16>())
                .prop_map(|(rows, cols)| Message::Resize(TtySize { rows, cols })),
            any::<i32>().prop_map(|signal| Message::Signal { signal }),
            any::<i32>().prop_map(|code| Message::Exited(ExitStatus::Code { code })),
            any::<i32>().prop_map(|signal| Message::Exited(ExitStatus::Signaled { signal })),
            s.prop_map(|message| Message::Error { message }),
            any::<bool>().prop_map(|reboot| Message::Shutdown { reboot }),
            Just(Message::ShutdownAck),
        ]
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<u32>(), arb_message())
                .prop_map(|(stream, message)| Frame::Control { stream, message }),
            (
                any::<u32>(),
                prop_oneof![
                    Just(FrameKind::Stdout),
                    Just(FrameKind::Stderr),
                    Just(FrameKind::Stdin)
                ],
                prop::collection::vec(any::<u8>(), 0..512)
            )
                .prop_map(|(stream, kind, data)| Frame::Data { stream, kind, data }),
        ]
    }

    proptest! {
        #[test]
        fn any_sequence_of_frames_roundtrips(frames in prop::collection::vec(arb_frame(), 0..8)) {
            let mut buf = Vec::new();
            for f in &frames {
                write_frame(&mut buf, f).unwrap();
            }
            let mut cur = io::Cursor::new(buf);
            let mut out = Vec::new();
            while let Some(f) = read_frame(&mut cur).unwrap() {
                out.push(f);
            }
            prop_assert_eq!(out, frames);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut cur = io::Cursor::new(bytes);
            while let Ok(Some(_)) = read_frame(&mut cur) {}
        }
    }
}

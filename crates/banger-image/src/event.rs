//! Progress events of an import, and the JSON-lines protocol the fakeroot
//! worker speaks on its stdout to report them.

use serde::{Deserialize, Serialize};

/// A named step of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStage {
    /// Extracting the tarball into the staging tree.
    Unpack,
    /// `mkfs.ext4 -d` of the root filesystem.
    BuildBase,
    /// Copying `/root` and writing its manifest.
    WorkSeed,
}

/// What an import reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ImportEvent {
    /// A stage started.
    Stage { stage: ImportStage },
    /// Bytes of the (compressed) source consumed so far.
    Progress {
        stage: ImportStage,
        done: u64,
        total: u64,
    },
}

/// The result the worker reports once the build directory is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildReport {
    pub size_bytes: u64,
    pub has_init: bool,
    /// The tree was unpacked in the memory staging directory (else in the
    /// build directory's `staging/`).
    #[serde(default)]
    pub staged_in_memory: bool,
}

/// Why the worker gave up, sent just before it exits non-zero so the
/// daemon can tell the user's bad source from its own failure (the stderr
/// line alone cannot say which).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerFailure {
    /// The source was at fault (see [`crate::ImageError::is_input_error`]).
    pub input: bool,
}

/// One line of worker stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkerMessage {
    Event(ImportEvent),
    Done(BuildReport),
    Failed(WorkerFailure),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lines_round_trip() {
        let msgs = [
            WorkerMessage::Event(ImportEvent::Stage {
                stage: ImportStage::BuildBase,
            }),
            WorkerMessage::Event(ImportEvent::Progress {
                stage: ImportStage::Unpack,
                done: 5,
                total: 9,
            }),
            WorkerMessage::Failed(WorkerFailure { input: true }),
            WorkerMessage::Done(BuildReport {
                size_bytes: 1 << 20,
                has_init: true,
                staged_in_memory: true,
            }),
        ];
        for msg in msgs {
            let line = serde_json::to_string(&msg).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<WorkerMessage>(&line).unwrap(), msg);
        }
        assert_eq!(
            serde_json::to_string(&msgs_first()).unwrap(),
            r#"{"event":{"event":"stage","stage":"unpack"}}"#
        );
    }

    fn msgs_first() -> WorkerMessage {
        WorkerMessage::Event(ImportEvent::Stage {
            stage: ImportStage::Unpack,
        })
    }
}

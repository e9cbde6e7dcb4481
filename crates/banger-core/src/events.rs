//! Progress of long operations: the [`EventSink`] each one reports its
//! stages to (the daemon streams them as NDJSON; tests collect them).

use banger_api::Event;

/// Where a long operation reports its stages. The daemon forwards these to
/// the client as NDJSON; tests collect them.
pub type EventSink<'a> = &'a (dyn Fn(Event) + Send + Sync);

/// Emit a `stage` event.
pub fn stage(events: EventSink<'_>, stage: &str, detail: impl Into<String>) {
    events(Event::Stage {
        stage: stage.into(),
        detail: detail.into(),
    });
}

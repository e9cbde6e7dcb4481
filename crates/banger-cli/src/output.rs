//! How results reach the terminal: aligned tables, `key: value` blocks,
//! JSON for scripts, and a spinner with stage names for long operations on
//! a TTY (plain `stage: detail` lines on stderr otherwise).

use std::io::IsTerminal;

use banger_api::Event;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Print rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn fields(pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{:<w$}  {v}", format!("{k}:"), w = w + 1);
    }
}

/// Shows the stages of a long operation.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            bar
        });
        Self { bar }
    }

    pub fn event(&self, ev: &Event) {
        let text = match ev {
            Event::Stage { stage, detail } => format!("{stage}: {detail}"),
            Event::Progress {
                stage,
                current,
                total,
            } => match total {
                Some(t) => format!(
                    "{stage}: {}/{}",
                    banger_api::size::human(*current),
                    banger_api::size::human(*t)
                ),
                None => format!("{stage}: {}", banger_api::size::human(*current)),
            },
            Event::Message { text } => {
                match &self.bar {
                    Some(bar) => bar.println(text),
                    None => eprintln!("{text}"),
                }
                return;
            }
            Event::Result { .. } | Event::Error { .. } | Event::Unknown => return,
        };
        match &self.bar {
            Some(bar) => bar.set_message(text),
            // Progress ticks are noise in a log; stages are not.
            None if matches!(ev, Event::Stage { .. }) => eprintln!("{text}"),
            None => {}
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

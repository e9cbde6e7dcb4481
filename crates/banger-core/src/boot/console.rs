//! The guest's serial console as the daemon reads it back: the last lines,
//! to say why a guest did not come up.

use std::path::Path;

/// The last lines of the console, to say why a guest did not come up.
pub(super) fn console_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    format!(" (console: {tail})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(&p, "a\n\nb\nc\nd\n").unwrap();
        assert_eq!(console_tail(&p), " (console: b | c | d)");
        assert_eq!(console_tail(&dir.path().join("none")), "");
    }
}

//! What the user typed, turned into API values before anything is sent:
//! sizes, memory, `KEY=VALUE` pairs and paths the daemon can use.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use banger_api::ByteSize;

/// Memory as typed: `2G`, `512M`, or a bare number of MiB.
pub fn parse_memory(s: &str) -> Result<u64> {
    if s.trim().chars().all(|c| c.is_ascii_digit()) {
        return s
            .trim()
            .parse()
            .map_err(|_| anyhow!("invalid memory {s:?}"));
    }
    let bytes: ByteSize = s.parse()?;
    if !bytes.0.is_multiple_of(ByteSize::MIB) {
        return Err(anyhow!("memory {s:?} must be a whole number of MiB"));
    }
    Ok(bytes.0 / ByteSize::MIB)
}

pub fn parse_size(s: &str) -> Result<ByteSize> {
    Ok(s.parse::<ByteSize>()?)
}

/// `-e KEY=VALUE` options as pairs.
pub fn parse_env(vars: &[String]) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for kv in vars {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid --env {kv:?}: expected KEY=VALUE"))?;
        if k.is_empty() {
            return Err(anyhow!("invalid --env {kv:?}: empty name"));
        }
        env.push((k.to_string(), v.to_string()));
    }
    Ok(env)
}

/// Paths sent to the daemon are absolute: it does not share our cwd.
pub fn absolute(p: &Path) -> Result<String> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(banger_config::paths::absolutize(p, &cwd)
        .display()
        .to_string())
}

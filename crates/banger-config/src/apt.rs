//! The host's apt sources, read for defaults: which Debian security
//! archive the host uses (`kernel_mirror`'s default). Read only; banger
//! never edits them.

use std::path::Path;

/// The Debian security archive the host's apt uses: the first source whose
/// suites include `<codename>-security`, from deb822 `*.sources` files or
/// one-line `deb URI SUITE...` entries. Debian publishes stable kernel
/// updates there first (`pool/updates/...`).
pub fn apt_security_mirror(root: &Path) -> Option<String> {
    let mut files = vec![root.join("etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir(root.join("etc/apt/sources.list.d")) {
        let mut extra: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        extra.sort();
        files.extend(extra);
    }
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        if f.extension().is_some_and(|e| e == "sources") {
            deb822_mirror(&text)
        } else {
            one_line_mirror(&text)
        }
    })
}

fn is_security(suite: &str) -> bool {
    suite.ends_with("-security")
}

fn deb822_mirror(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
        };
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        let deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let security = field("Suites").is_some_and(|s| s.split_whitespace().any(is_security));
        if enabled && deb && security {
            return field("URIs")?.split_whitespace().next().map(str::to_string);
        }
    }
    None
}

fn one_line_mirror(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let l = l.split('#').next()?.trim();
        let rest = l.strip_prefix("deb ")?.trim_start();
        // Skip `[arch=amd64 signed-by=...]`.
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?.1.trim_start(),
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        let suite = words.next()?;
        is_security(suite).then(|| uri.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_from_both_source_formats() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("etc/apt/sources.list.d")).unwrap();
        assert_eq!(apt_security_mirror(d), None);
        std::fs::write(
            d.join("etc/apt/sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\n\n\
             Types: deb\n# a comment\nURIs: http://m.example/debian-security\n\
             Suites: bookworm-security\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(
            apt_security_mirror(d).as_deref(),
            Some("http://m.example/debian-security")
        );
        std::fs::write(
            d.join("etc/apt/sources.list"),
            "# deb http://x/ bookworm-security main\ndeb http://a.example/debian bookworm main\n\
             deb [signed-by=/k.gpg] http://s.example/debian-security bookworm-security main\n",
        )
        .unwrap();
        assert_eq!(
            apt_security_mirror(d).as_deref(),
            Some("http://s.example/debian-security")
        );
    }
}

//! The CLI reaches the daemon only through banger-api's endpoint
//! declarations: every declared endpoint is called somewhere in the CLI by
//! its type, and no route is spelled by hand.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path, text));
        }
    }
}

fn cli_sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    assert!(out.len() > 20, "found only {} source files", out.len());
    out
}

/// `word` as a whole identifier in `text`.
fn names(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

#[test]
fn every_declared_endpoint_is_used_by_the_client() {
    let src = cli_sources();
    let unused: Vec<&str> = banger_api::endpoints::ALL
        .iter()
        .filter(|e| !src.iter().any(|(_, text)| names(text, e.type_name)))
        .map(|e| e.type_name)
        .collect();
    assert!(
        unused.is_empty(),
        "declared but never called by the CLI: {unused:?}"
    );
}

#[test]
fn no_route_is_spelled_by_hand() {
    for (path, text) in cli_sources() {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            assert!(
                !code.contains("\"/v1") && !code.contains("\"/v{"),
                "{}:{}: a route spelled by hand: {line}",
                path.display(),
                n + 1
            );
        }
    }
}

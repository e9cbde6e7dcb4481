//! Image references: parsing with one-line errors, normalization
//! (`debian` → `docker.io/library/debian:latest`), and whether a registry
//! is on loopback (the only place plain HTTP is used unasked).

use std::net::IpAddr;

use oci_client::Reference;

use crate::OciError;

/// Parse and normalize an image reference such as `debian:bookworm`,
/// `127.0.0.1:5000/app@sha256:…` or `ghcr.io/o/r:tag`.
pub fn parse_reference(input: &str) -> Result<Reference, OciError> {
    let bad = |reason: &str| OciError::BadReference {
        reference: input.to_string(),
        reason: reason.to_string(),
    };
    if input.is_empty() {
        return Err(bad("empty"));
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace"));
    }
    let reference: Reference = input.parse().map_err(|e: oci_client::ParseError| {
        let reason = match e {
            oci_client::ParseError::DigestInvalidLength
            | oci_client::ParseError::DigestInvalidFormat => {
                "digest must be sha256: and 64 hex digits".to_string()
            }
            other => other.to_string(),
        };
        bad(&reason)
    })?;
    if let Some(digest) = reference.digest() {
        // Only sha256 content can be verified (and named in the cache).
        crate::digest::hex_of(digest).map_err(|_| bad("only sha256 digests are supported"))?;
    }
    Ok(reference)
}

/// The normalized text of a reference, e.g. `docker.io/library/debian:bookworm`.
pub fn normalized(reference: &Reference) -> String {
    reference.whole()
}

/// Whether `registry` (`host[:port]`) is a loopback address: `localhost`,
/// `127.0.0.0/8` or `::1`.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, _)) => h,
            None => return false,
        }
    } else {
        match registry.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => registry,
        }
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_docker_hub_names() {
        let r = parse_reference("debian:bookworm").unwrap();
        assert_eq!(normalized(&r), "docker.io/library/debian:bookworm");
        let r = parse_reference("debian").unwrap();
        assert_eq!(normalized(&r), "docker.io/library/debian:latest");
        let r = parse_reference("127.0.0.1:5000/a/b:t").unwrap();
        assert_eq!((r.registry(), r.repository()), ("127.0.0.1:5000", "a/b"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("localhost:1/x@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d.as_str()));
    }

    #[test]
    fn rejects_bad_references_in_one_line() {
        for bad in [
            "",
            "Debian:bookworm",
            "debian:",
            "a b",
            "debian@sha256:abc",
            "x:5000/y:t@sha512:00",
            "debian:bad/tag",
        ] {
            let err = parse_reference(bad).expect_err(bad).to_string();
            assert!(err.starts_with("invalid image reference"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn loopback_detection() {
        for yes in [
            "127.0.0.1:5000",
            "127.9.8.7",
            "localhost:80",
            "[::1]:5000",
            "LOCALHOST",
        ] {
            assert!(is_loopback_registry(yes), "{yes}");
        }
        for no in [
            "docker.io",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.evil.com:5000",
            "128.0.0.1",
        ] {
            assert!(!is_loopback_registry(no), "{no}");
        }
    }
}

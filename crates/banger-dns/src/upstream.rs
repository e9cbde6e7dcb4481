//! Upstream resolvers: where names outside the VM domain are forwarded.
//! The default is the host's own, read from /etc/resolv.conf with
//! hickory's parser (the `resolv-conf` crate underneath).

use std::net::SocketAddr;
use std::path::Path;

use hickory_server::resolver::system_conf::parse_resolv_conf;

use crate::DnsError;

/// The host's resolv.conf, the default source of upstreams.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The nameservers of the host's /etc/resolv.conf, port 53.
///
/// A stub such as systemd-resolved's 127.0.0.53 is kept: the daemon runs on
/// the host, so it can reach it, and the stub knows the host's real upstreams.
pub fn host_upstreams() -> Result<Vec<SocketAddr>, DnsError> {
    upstreams_from_file(Path::new(HOST_RESOLV_CONF))
}

/// The nameservers of a resolv.conf file, port 53.
pub fn upstreams_from_file(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read(path).map_err(|source| DnsError::ReadResolvConf {
        path: path.to_owned(),
        source,
    })?;
    upstreams_from_resolv_conf(&text).map_err(|reason| DnsError::ParseResolvConf {
        path: path.to_owned(),
        reason,
    })
}

/// The nameservers of resolv.conf text, port 53, in file order. An error
/// (as text) when there are none: a forwarder with no upstream would answer
/// SERVFAIL to every name, so callers should know at start.
pub fn upstreams_from_resolv_conf(text: &[u8]) -> Result<Vec<SocketAddr>, String> {
    let (config, _options) = parse_resolv_conf(text).map_err(|e| e.to_string())?;
    Ok(config
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, 53))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nameservers_in_order() {
        let text = b"# generated\nsearch example.invalid\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n";
        let got = upstreams_from_resolv_conf(text).unwrap();
        assert_eq!(
            got,
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn no_nameserver_is_an_error() {
        let err = upstreams_from_resolv_conf(b"search example.invalid\n").unwrap_err();
        assert!(err.contains("no nameservers"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = upstreams_from_file(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/resolv.conf"),
            "{err}"
        );
    }
}

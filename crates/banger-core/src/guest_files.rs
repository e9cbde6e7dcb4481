//! The per-VM files banger stages into the overlay disk's upper layer, so the
//! guest sees its own hostname, hosts, resolver, network and sshd settings
//! from the first instruction of its boot, whatever the image ships.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Where the overlay disk keeps the overlayfs upper layer and work dir; the
/// agent mounts `<disk>/upper` over the read-only base with `<disk>/work`.
pub const UPPER: &str = "upper";
pub const WORKDIR: &str = "work";
/// The VM's ed25519 host key (generated at create), relative to the root;
/// the sshd drop-in names it so sshd offers this key and no other.
pub const SSH_HOST_KEY: &str = "etc/ssh/ssh_host_ed25519_key";

/// One file to stage, relative to the upper layer's root (`etc/hostname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    pub path: &'static str,
    pub contents: String,
    pub mode: u32,
}

#[derive(Debug, Clone)]
pub struct GuestNet {
    pub ip: Ipv4Addr,
    pub bridge: Ipv4Net,
    pub dns: Vec<Ipv4Addr>,
    pub domain: String,
}

/// The files for VM `name`, all owned by root.
pub fn guest_files(name: &str, net: &GuestNet) -> Vec<GuestFile> {
    let prefix = net.bridge.prefix_len();
    let gw = net.bridge.addr();
    let fqdn = format!("{name}.{}", net.domain);
    let mut resolv = String::new();
    for ns in &net.dns {
        resolv.push_str(&format!("nameserver {ns}\n"));
    }
    resolv.push_str(&format!("search {}\n", net.domain));
    let dns_lines: String = net.dns.iter().map(|d| format!("DNS={d}\n")).collect();
    vec![
        GuestFile {
            path: "etc/hostname",
            contents: format!("{name}\n"),
            mode: 0o644,
        },
        GuestFile {
            path: "etc/hosts",
            contents: format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{fqdn} {name}\n{}\t{fqdn} {name}\n",
                net.ip
            ),
            mode: 0o644,
        },
        GuestFile {
            path: "etc/resolv.conf",
            contents: resolv,
            mode: 0o644,
        },
        // For images whose init runs systemd-networkd; the banger agent also
        // configures eth0 itself from the kernel command line before any init,
        // so images without networkd get the same address.
        GuestFile {
            path: "etc/systemd/network/10-banger.network",
            contents: format!(
                "# Written by banger for this VM; edits are kept on the overlay disk.\n[Match]\nName=eth0\n\n[Network]\nAddress={}/{prefix}\nGateway={gw}\n{dns_lines}Domains={}\n",
                net.ip, net.domain
            ),
            mode: 0o644,
        },
        GuestFile {
            path: "etc/ssh/sshd_config.d/99-banger.conf",
            contents: SSHD_DROP_IN.to_string(),
            mode: 0o644,
        },
    ]
}

/// Every path banger stages into a VM's upper layer (relative, like
/// [`GuestFile::path`]): they describe that VM, so `image commit` leaves
/// them out of a new image.
pub fn staged_paths() -> Vec<String> {
    let net = GuestNet {
        ip: Ipv4Addr::UNSPECIFIED,
        bridge: Ipv4Net::default(),
        dns: Vec::new(),
        domain: String::new(),
    };
    let mut paths: Vec<String> = guest_files("vm", &net)
        .into_iter()
        .map(|f| f.path.to_string())
        .collect();
    paths.push(SSH_HOST_KEY.to_string());
    paths.push(format!("{SSH_HOST_KEY}.pub"));
    paths
}

/// Root is the only account in a banger VM, reached over the host bridge or
/// the agent proxy: keys only, every password path closed, the key file
/// pinned to the one banger writes on the work disk, and the host key to the
/// one banger generated (so it matches banger's known_hosts).
const SSHD_DROP_IN: &str = "\
# Written by banger: key-only root login with the VM's own host key.
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile /root/.ssh/authorized_keys
HostKey /etc/ssh/ssh_host_ed25519_key
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_name_the_vm_and_its_address() {
        let net = GuestNet {
            ip: Ipv4Addr::new(172, 16, 0, 7),
            bridge: "172.16.0.1/24".parse().unwrap(),
            dns: vec![Ipv4Addr::new(9, 9, 9, 9)],
            domain: "vm".into(),
        };
        let files = guest_files("web", &net);
        let get = |p: &str| files.iter().find(|f| f.path == p).unwrap().contents.clone();
        assert_eq!(get("etc/hostname"), "web\n");
        assert!(get("etc/hosts").contains("172.16.0.7\tweb.vm web"));
        assert_eq!(get("etc/resolv.conf"), "nameserver 9.9.9.9\nsearch vm\n");
        let network = get("etc/systemd/network/10-banger.network");
        assert!(network.contains("Address=172.16.0.7/24"));
        assert!(network.contains("Gateway=172.16.0.1"));
        assert!(get("etc/ssh/sshd_config.d/99-banger.conf").contains("PasswordAuthentication no"));
    }
}

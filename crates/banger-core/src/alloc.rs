//! Allocation of the identities a VM keeps for life: id, name, guest IP and
//! vsock CID. Pure functions over "what is taken"; the VM service calls them
//! under its create lock and the store's UNIQUE constraints back them up.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rand::Rng;

/// vsock CIDs 0-2 are reserved (hypervisor, local, host).
pub const FIRST_CID: u32 = 3;

/// 16 lowercase hex characters from the OS RNG.
pub fn new_id() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// First free address in the bridge's network after the bridge itself,
/// skipping the network and broadcast addresses.
pub fn next_ip(bridge: Ipv4Net, taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    bridge
        .hosts()
        .filter(|ip| *ip != bridge.addr())
        .find(|ip| !taken.contains(ip))
}

pub fn next_cid(taken: &HashSet<u32>) -> u32 {
    (FIRST_CID..)
        .find(|cid| !taken.contains(cid))
        .unwrap_or(FIRST_CID)
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "clever", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lively",
    "merry", "nimble", "proud", "quick", "quiet", "rapid", "shiny", "silly", "swift", "witty",
];
const NOUNS: &[&str] = &[
    "otter", "falcon", "badger", "heron", "lynx", "marten", "osprey", "panda", "quokka", "raven",
    "salmon", "tapir", "walrus", "wombat", "yak", "zebra", "gecko", "ibis", "koala", "lemur",
];

/// A readable name like `swift-otter`, with a numeric suffix when the plain
/// pairs are all taken.
pub fn new_name(taken: &HashSet<String>) -> String {
    let mut rng = rand::rng();
    for attempt in 0..200 {
        let a = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
        let n = NOUNS[rng.random_range(0..NOUNS.len())];
        let name = if attempt < 50 {
            format!("{a}-{n}")
        } else {
            format!("{a}-{n}-{}", rng.random_range(2..10_000))
        };
        if !taken.contains(&name) {
            return name;
        }
    }
    format!("vm-{}", &new_id()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_skip_bridge_and_taken() {
        let net: Ipv4Net = "172.16.0.1/24".parse().unwrap();
        let mut taken = HashSet::new();
        assert_eq!(next_ip(net, &taken), Some(Ipv4Addr::new(172, 16, 0, 2)));
        taken.insert(Ipv4Addr::new(172, 16, 0, 2));
        assert_eq!(next_ip(net, &taken), Some(Ipv4Addr::new(172, 16, 0, 3)));
    }

    #[test]
    fn ips_run_out() {
        let net: Ipv4Net = "10.0.0.1/30".parse().unwrap();
        let taken: HashSet<_> = [Ipv4Addr::new(10, 0, 0, 2)].into();
        assert_eq!(next_ip(net, &taken), None);
    }

    #[test]
    fn bridge_not_first_host() {
        let net: Ipv4Net = "10.0.0.5/29".parse().unwrap();
        let got = next_ip(net, &HashSet::new()).unwrap();
        assert_eq!(got, Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn cids_start_at_three_and_fill_gaps() {
        assert_eq!(next_cid(&HashSet::new()), 3);
        assert_eq!(next_cid(&[3, 4, 6].into()), 5);
    }

    #[test]
    fn names_are_valid_and_unique() {
        let mut taken = HashSet::new();
        for _ in 0..500 {
            let n = new_name(&taken);
            banger_api::validate::vm_name(&n).unwrap();
            assert!(taken.insert(n));
        }
    }

    #[test]
    fn ids_are_hex16() {
        let id = new_id();
        assert_eq!(id.len(), 16);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}

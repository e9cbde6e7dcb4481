//! The text of banger's two nftables tables, rendered from a [`RuleSet`],
//! and the incremental scripts that add or remove one guest. Everything
//! here is a pure function of its input: `nft -f -` runs the result
//! (see [`super::run_script`]).
//!
//! For bridge `B` with address `A` in network `N` (`ID` is a guest's tap
//! id, the 12 hex characters after `bgt`):
//!
//! ```text
//! table inet banger
//!   map ports_tcp     ipv4_addr . inet_service : ipv4_addr . inet_service   HOST_IP . HP -> GUEST . GP
//!   map ports_tcp_any inet_service : ipv4_addr . inet_service               HP -> GUEST . GP (every host address)
//!   map ports_udp, ports_udp_any                                            the same for UDP
//!   map egress        ipv4_addr : verdict         a guest whose egress is not `all`: drop, or jump e_ID
//!   set dns_clients   dynamic, for the per-client count of DNS connections
//!   chain prerouting  (nat, dstnat)   meta nfproto ipv4 fib daddr type local dnat ip to
//!                                     [ip daddr .] PROTO dport map @ports_PROTO[_any]
//!   chain output      (nat, -100)     the same, for clients on the host itself
//!   chain postrouting (nat, srcnat)
//!       ip saddr N oifname != B masquerade             guests reach the outside
//!       oifname B ip saddr 127.0.0.0/8 masquerade      host loopback clients of a published port
//!       ip saddr N oifname B ct status dnat masquerade a guest using a published port (hairpin)
//!   chain forward     (filter)
//!       iifname B ct state established,related accept replies of the guests' flows
//!       iifname B ip saddr vmap @egress                per-guest egress policy
//!       iifname B accept                               guests out, and guest to guest
//!       oifname B ct state established,related accept  replies back in
//!       oifname B ct status dnat accept                published ports
//!       oifname B drop                                 nothing else reaches a guest
//!       [guard] meta iifkind != "bridge" meta oifkind != "bridge" drop
//!               only when forwarding was off before banger: the host keeps not
//!               routing between its other interfaces (a bridge's own traffic,
//!               Docker's or libvirt's, passes)
//!   chain input       (filter)
//!       iifname != B iifname != lo ip daddr A udp/tcp dport 53 drop   DNS only for guests and the host
//!       iifname B ct state established,related accept
//!       iifname B ip daddr A udp dport 53 accept
//!       iifname B ip daddr A tcp dport 53 ct state new add @dns_clients { ip saddr ct count over 8 } reject
//!       iifname B ip daddr A tcp dport 53 ct state new ct count over 64 reject
//!       iifname B ip daddr A tcp dport 53 accept
//!       iifname B icmp type echo-request accept
//!       iifname B drop                                 sshd, the daemon, all else: unreachable from guests
//!   per guest with an allow list: chain e_ID, sets d_ID (addresses) and p_ID (address . proto . port)
//!       ct state established,related accept; one rule per network entry; ip daddr @d_ID accept;
//!       ip daddr . meta l4proto . th dport @p_ID accept; drop
//!
//! table bridge banger
//!   set guests  ifname . ether_addr . ipv4_addr     each tap with its guest's MAC and address
//!   map l2_egress ifname : verdict                  guest-to-guest frames of a guest whose egress is not `all`
//!   chain prerouting (filter, -300)   frames a guest sends, before the bridge learns or forwards them
//!       iifname != "bgt*" accept
//!       ARP that is not Ethernet/IPv4 drop
//!       ether type arp iifname . ether saddr . arp saddr ip != @guests drop
//!       ether type arp iifname . arp saddr ether . arp saddr ip != @guests drop
//!       ether type arp accept
//!       ether type ip iifname . ether saddr . ip saddr != @guests drop
//!       ether type ip accept
//!       drop                               IPv6 (router advertisements included), VLAN tags, the rest
//!   chain forward (filter)    ether type ip iifname vmap @l2_egress
//!   per guest with an allow list: chain e_ID, sets d_ID, p_ID (the same rules, no conntrack)
//! ```
//!
//! A guest is one `add element` per table (its tap, MAC and address) plus
//! its egress verdict and its ports: adding or removing one never touches
//! another guest's rules, and costs one short `nft` run, not a table
//! rebuild.
//!
//! Reaching a published port on 127.0.0.1 needs, besides the output-hook
//! DNAT, `route_localnet` on the bridge and the masquerade of 127.0.0.0/8
//! out of the bridge (the guest would otherwise answer 127.0.0.1, i.e.
//! itself); see [`crate::sysctl::enable_route_localnet`].
//!
//! A packet must be accepted by every base chain at a hook: a drop
//! elsewhere (another firewall's forward policy) still wins over these
//! accepts, and the guard's drop wins over another table's accept.

use std::fmt::Write as _;

use crate::guest::{AllowRule, AllowTarget, Egress, Guest, GuestNet, Proto, Resolved};

use super::{RuleSet, TABLE};

/// Guests' DNS connections to the gateway at once, per guest address.
pub const DNS_TCP_PER_CLIENT: u32 = 8;
/// Guests' DNS connections to the gateway at once, in all.
pub const DNS_TCP_TOTAL: u32 = 64;
/// The shortest time an address from a DNS answer stays allowed.
pub const MIN_RESOLVED_TTL_S: u32 = 60;
/// The longest.
pub const MAX_RESOLVED_TTL_S: u32 = 86_400;

/// Both tables, replaced in one transaction: each is created (so the
/// delete cannot fail), deleted and written anew, then every guest added.
pub fn full(rs: &RuleSet) -> String {
    let mut s = String::new();
    for family in ["inet", "bridge"] {
        let _ = writeln!(s, "table {family} {TABLE} {{}}");
        let _ = writeln!(s, "delete table {family} {TABLE}");
    }
    inet_skeleton(&mut s, &rs.net, rs.forward_guard);
    bridge_skeleton(&mut s);
    for g in &rs.guests {
        s.push_str(&attach(g));
    }
    s
}

/// Delete both tables; missing tables are fine.
pub fn remove() -> String {
    let mut s = String::new();
    for family in ["inet", "bridge"] {
        let _ = writeln!(s, "table {family} {TABLE} {{}}");
        let _ = writeln!(s, "delete table {family} {TABLE}");
    }
    s
}

fn inet_skeleton(s: &mut String, net: &GuestNet, guard: bool) {
    let b = &net.bridge;
    let a = net.gateway();
    let n = net.cidr.trunc();
    let _ = writeln!(s, "table inet {TABLE} {{");
    for proto in ["tcp", "udp"] {
        let _ = writeln!(
            s,
            "\tmap ports_{proto} {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; }}"
        );
        let _ = writeln!(
            s,
            "\tmap ports_{proto}_any {{ type inet_service : ipv4_addr . inet_service; }}"
        );
    }
    let _ = writeln!(s, "\tmap egress {{ type ipv4_addr : verdict; }}");
    let _ = writeln!(
        s,
        "\tset dns_clients {{ type ipv4_addr; size 4096; flags dynamic; }}"
    );
    for (chain, hook, prio) in [
        ("prerouting", "prerouting", "dstnat"),
        ("output", "output", "-100"),
    ] {
        let _ = writeln!(
            s,
            "\tchain {chain} {{ type nat hook {hook} priority {prio}; policy accept;"
        );
        for proto in ["tcp", "udp"] {
            let _ = writeln!(
                s,
                "\t\tmeta nfproto ipv4 fib daddr type local dnat ip to ip daddr . {proto} dport map @ports_{proto}"
            );
            let _ = writeln!(
                s,
                "\t\tmeta nfproto ipv4 fib daddr type local dnat ip to {proto} dport map @ports_{proto}_any"
            );
        }
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(
        s,
        "\tchain postrouting {{ type nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(s, "\t\tip saddr {n} oifname != \"{b}\" masquerade");
    let _ = writeln!(s, "\t\toifname \"{b}\" ip saddr 127.0.0.0/8 masquerade");
    let _ = writeln!(
        s,
        "\t\tip saddr {n} oifname \"{b}\" ct status dnat masquerade"
    );
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(
        s,
        "\tchain forward {{ type filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(s, "\t\tiifname \"{b}\" ct state established,related accept");
    let _ = writeln!(s, "\t\tiifname \"{b}\" ip saddr vmap @egress");
    let _ = writeln!(s, "\t\tiifname \"{b}\" accept");
    let _ = writeln!(s, "\t\toifname \"{b}\" ct state established,related accept");
    let _ = writeln!(s, "\t\toifname \"{b}\" ct status dnat accept");
    let _ = writeln!(s, "\t\toifname \"{b}\" drop");
    if guard {
        let _ = writeln!(
            s,
            "\t\tmeta iifkind != \"bridge\" meta oifkind != \"bridge\" drop"
        );
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(
        s,
        "\tchain input {{ type filter hook input priority filter; policy accept;"
    );
    for proto in ["udp", "tcp"] {
        let _ = writeln!(
            s,
            "\t\tiifname != \"{b}\" iifname != \"lo\" ip daddr {a} {proto} dport 53 drop"
        );
    }
    let _ = writeln!(s, "\t\tiifname \"{b}\" ct state established,related accept");
    let _ = writeln!(s, "\t\tiifname \"{b}\" ip daddr {a} udp dport 53 accept");
    let _ = writeln!(
        s,
        "\t\tiifname \"{b}\" ip daddr {a} tcp dport 53 ct state new add @dns_clients {{ ip saddr ct count over {DNS_TCP_PER_CLIENT} }} reject with tcp reset"
    );
    let _ = writeln!(
        s,
        "\t\tiifname \"{b}\" ip daddr {a} tcp dport 53 ct state new ct count over {DNS_TCP_TOTAL} reject with tcp reset"
    );
    let _ = writeln!(s, "\t\tiifname \"{b}\" ip daddr {a} tcp dport 53 accept");
    let _ = writeln!(s, "\t\tiifname \"{b}\" icmp type echo-request accept");
    let _ = writeln!(s, "\t\tiifname \"{b}\" drop");
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
}

fn bridge_skeleton(s: &mut String) {
    let _ = writeln!(s, "table bridge {TABLE} {{");
    let _ = writeln!(
        s,
        "\tset guests {{ type ifname . ether_addr . ipv4_addr; }}"
    );
    let _ = writeln!(s, "\tmap l2_egress {{ type ifname : verdict; }}");
    let _ = writeln!(
        s,
        "\tchain prerouting {{ type filter hook prerouting priority -300; policy accept;"
    );
    let _ = writeln!(s, "\t\tiifname != \"bgt*\" accept");
    for (field, want) in [
        ("htype", "1"),
        ("ptype", "ip"),
        ("hlen", "6"),
        ("plen", "4"),
    ] {
        let _ = writeln!(s, "\t\tether type arp arp {field} != {want} drop");
    }
    let _ = writeln!(
        s,
        "\t\tether type arp iifname . ether saddr . arp saddr ip != @guests drop"
    );
    let _ = writeln!(
        s,
        "\t\tether type arp iifname . arp saddr ether . arp saddr ip != @guests drop"
    );
    let _ = writeln!(s, "\t\tether type arp accept");
    let _ = writeln!(
        s,
        "\t\tether type ip iifname . ether saddr . ip saddr != @guests drop"
    );
    let _ = writeln!(s, "\t\tether type ip accept");
    let _ = writeln!(s, "\t\tdrop");
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(
        s,
        "\tchain forward {{ type filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(s, "\t\tether type ip iifname vmap @l2_egress");
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
}

/// The element that binds `g`'s tap to its MAC and address.
fn binding(g: &Guest) -> String {
    format!("\"{}\" . {} . {}", g.tap, g.mac, g.ip)
}

fn port_elements(g: &Guest) -> Vec<(String, String)> {
    g.ports
        .iter()
        .map(|p| {
            let proto = p.proto.as_str();
            let target = format!("{} . {}", g.ip, p.guest_port);
            match p.host_ip {
                Some(h) => (
                    format!("ports_{proto}"),
                    format!("{h} . {} : {target}", p.host_port),
                ),
                None => (
                    format!("ports_{proto}_any"),
                    format!("{} : {target}", p.host_port),
                ),
            }
        })
        .collect()
}

/// What to add for `g`: its binding, its egress verdict (and its own
/// chain and sets for an allow list), its published ports.
pub fn attach(g: &Guest) -> String {
    let mut s = String::new();
    let id = g.id();
    let _ = writeln!(s, "add element bridge {TABLE} guests {{ {} }}", binding(g));
    match &g.egress {
        Egress::All => {}
        Egress::None => {
            let _ = writeln!(s, "add element inet {TABLE} egress {{ {} : drop }}", g.ip);
            let _ = writeln!(
                s,
                "add element bridge {TABLE} l2_egress {{ \"{}\" : drop }}",
                g.tap
            );
        }
        Egress::Allow(rules) => {
            for family in ["inet", "bridge"] {
                allow_chain(&mut s, family, id, rules);
            }
            let _ = writeln!(
                s,
                "add element inet {TABLE} egress {{ {} : jump e_{id} }}",
                g.ip
            );
            let _ = writeln!(
                s,
                "add element bridge {TABLE} l2_egress {{ \"{}\" : jump e_{id} }}",
                g.tap
            );
        }
    }
    for (map, elem) in port_elements(g) {
        let _ = writeln!(s, "add element inet {TABLE} {map} {{ {elem} }}");
    }
    s
}

fn allow_chain(s: &mut String, family: &str, id: &str, rules: &[AllowRule]) {
    let _ = writeln!(
        s,
        "add set {family} {TABLE} d_{id} {{ type ipv4_addr; flags timeout; }}"
    );
    let _ = writeln!(
        s,
        "add set {family} {TABLE} p_{id} {{ type ipv4_addr . inet_proto . inet_service; flags timeout; }}"
    );
    let _ = writeln!(s, "add chain {family} {TABLE} e_{id}");
    let mut rule = |body: &str| {
        let _ = writeln!(s, "add rule {family} {TABLE} e_{id} {body}");
    };
    if family == "inet" {
        rule("ct state established,related accept");
    }
    for r in rules {
        let AllowTarget::Net(net) = &r.target else {
            continue;
        };
        let net = net.trunc();
        match (r.ports, r.proto) {
            (None, _) => rule(&format!("ip daddr {net} accept")),
            (Some(p), Some(proto)) => rule(&format!(
                "ip daddr {net} {} dport {p} accept",
                proto.as_str()
            )),
            (Some(p), None) => rule(&format!(
                "ip daddr {net} meta l4proto {{ tcp, udp }} th dport {p} accept"
            )),
        }
    }
    rule(&format!("ip daddr @d_{id} accept"));
    rule(&format!(
        "meta l4proto {{ tcp, udp }} ip daddr . meta l4proto . th dport @p_{id} accept"
    ));
    rule("drop");
}

/// What to delete for `g`: exactly what [`attach`] added. The verdict
/// elements go before the chains they jump to.
pub fn detach(g: &Guest) -> String {
    let mut s = String::new();
    let id = g.id();
    let _ = writeln!(
        s,
        "delete element bridge {TABLE} guests {{ {} }}",
        binding(g)
    );
    if g.egress != Egress::All {
        let _ = writeln!(s, "delete element inet {TABLE} egress {{ {} }}", g.ip);
        let _ = writeln!(
            s,
            "delete element bridge {TABLE} l2_egress {{ \"{}\" }}",
            g.tap
        );
    }
    if matches!(g.egress, Egress::Allow(_)) {
        for family in ["inet", "bridge"] {
            let _ = writeln!(s, "delete chain {family} {TABLE} e_{id}");
            let _ = writeln!(s, "delete set {family} {TABLE} d_{id}");
            let _ = writeln!(s, "delete set {family} {TABLE} p_{id}");
        }
    }
    for (map, elem) in port_elements(g) {
        let key = elem.split(" : ").next().unwrap_or(&elem).to_string();
        let _ = writeln!(s, "delete element inet {TABLE} {map} {{ {key} }}");
    }
    s
}

/// Allow `g` the addresses a DNS answer gave, each for its TTL (clamped
/// to [`MIN_RESOLVED_TTL_S`]..=[`MAX_RESOLVED_TTL_S`]). Adding an element
/// that exists refreshes its timeout on kernels that update elements
/// (6.10 and later); older ones keep the first timeout. `None` when `g`
/// has no allow list or nothing was resolved.
pub fn resolved(g: &Guest, answers: &[Resolved]) -> Option<String> {
    if !matches!(g.egress, Egress::Allow(_)) || answers.is_empty() {
        return None;
    }
    let id = g.id();
    let mut hosts = Vec::new();
    let mut services = Vec::new();
    for r in answers {
        let t = r.ttl_s.clamp(MIN_RESOLVED_TTL_S, MAX_RESOLVED_TTL_S);
        match r.port {
            None => hosts.push(format!("{} timeout {t}s", r.ip)),
            Some(port) => {
                let protos: &[Proto] = match &r.proto {
                    Some(p) => std::slice::from_ref(p),
                    None => &[Proto::Tcp, Proto::Udp],
                };
                for p in protos {
                    services.push(format!("{} . {} . {port} timeout {t}s", r.ip, p.as_str()));
                }
            }
        }
    }
    let mut s = String::new();
    for family in ["inet", "bridge"] {
        if !hosts.is_empty() {
            let _ = writeln!(
                s,
                "add element {family} {TABLE} d_{id} {{ {} }}",
                hosts.join(", ")
            );
        }
        if !services.is_empty() {
            let _ = writeln!(
                s,
                "add element {family} {TABLE} p_{id} {{ {} }}",
                services.join(", ")
            );
        }
    }
    Some(s)
}

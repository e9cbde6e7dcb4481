//! Does the kernel hold the tables banger wants? The expectation is read
//! from the very script [`super::render::full`] would run (so the two
//! cannot drift apart): every chain with its number of rules, every set
//! and map with its number of elements. The kernel's side is `nft -j
//! list table`. Sets filled at run time (the DNS-fed `d_*`/`p_*` and the
//! DNS connection counter) are compared by presence only.
//!
//! Counting catches what happens in practice: a flushed ruleset, a
//! deleted table, chain, rule or element, a rule added by hand. It does
//! not prove that a rule was not edited into another of the same count,
//! which only root can do and which the change monitor repairs anyway.

use std::collections::BTreeMap;
use std::fmt;

use super::{RuleSet, TABLE, list_table, render};
use crate::NetError;

/// How the tables in the kernel compare with the desired ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableCheck {
    Matches,
    /// Neither table exists.
    Missing,
    /// What differs, first difference first.
    Differs(String),
}

impl fmt::Display for TableCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableCheck::Matches => write!(f, "inet/bridge {TABLE} match"),
            TableCheck::Missing => write!(f, "inet/bridge {TABLE} missing"),
            TableCheck::Differs(d) => write!(f, "inet/bridge {TABLE} differ: {d}"),
        }
    }
}

/// Objects keyed by (family, kind, name): rules of a chain, or elements
/// of a set or map (`None` for a set compared by presence).
type Shape = BTreeMap<(String, &'static str, String), Option<usize>>;

fn dynamic(name: &str) -> bool {
    name == "dns_clients" || name.starts_with("d_") || name.starts_with("p_")
}

/// What `script` (a [`render::full`] output) creates.
fn expected(script: &str) -> Shape {
    let mut shape = Shape::new();
    let mut family = String::new();
    let mut chain: Option<String> = None;
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["table", f, _, "{"] => family = (*f).to_string(),
            ["chain", name, ..] if line.starts_with('\t') => {
                shape.insert((family.clone(), "chain", (*name).to_string()), Some(0));
                chain = Some((*name).to_string());
            }
            ["set" | "map", name, ..] if line.starts_with('\t') => {
                let n = (!dynamic(name)).then_some(0);
                shape.insert((family.clone(), "set", (*name).to_string()), n);
            }
            ["}"] if line.starts_with('\t') => chain = None,
            _ if line.starts_with("\t\t") => {
                if let Some(c) = &chain
                    && let Some(Some(n)) = shape.get_mut(&(family.clone(), "chain", c.clone()))
                {
                    *n += 1;
                }
            }
            ["add", "chain", f, _, name, ..] => {
                shape.insert(((*f).to_string(), "chain", (*name).to_string()), Some(0));
            }
            ["add", "rule", f, _, name, ..] => {
                if let Some(Some(n)) =
                    shape.get_mut(&((*f).to_string(), "chain", (*name).to_string()))
                {
                    *n += 1;
                }
            }
            ["add", "set", f, _, name, ..] => {
                let n = (!dynamic(name)).then_some(0);
                shape.insert(((*f).to_string(), "set", (*name).to_string()), n);
            }
            ["add", "element", f, _, name, ..] => {
                let count = line
                    .split_once('{')
                    .map(|(_, rest)| rest.matches(", ").count() + 1)
                    .unwrap_or(0);
                if let Some(Some(n)) =
                    shape.get_mut(&((*f).to_string(), "set", (*name).to_string()))
                {
                    *n += count;
                }
            }
            _ => {}
        }
    }
    shape
}

/// What the kernel holds, from `nft -j list table` of both families.
fn live(listings: &[(&str, serde_json::Value)]) -> Shape {
    let mut shape = Shape::new();
    for (family, json) in listings {
        let objects = json["nftables"].as_array().cloned().unwrap_or_default();
        for o in &objects {
            if let Some(c) = o.get("chain") {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                shape
                    .entry(((*family).to_string(), "chain", name))
                    .or_insert(Some(0));
            }
        }
        for o in &objects {
            if let Some(r) = o.get("rule") {
                let name = r["chain"].as_str().unwrap_or_default().to_string();
                if let Some(Some(n)) = shape.get_mut(&((*family).to_string(), "chain", name)) {
                    *n += 1;
                }
            }
            if let Some(s) = o.get("set").or_else(|| o.get("map")) {
                let name = s["name"].as_str().unwrap_or_default().to_string();
                let n = s["elem"].as_array().map_or(0, Vec::len);
                let n = (!dynamic(&name)).then_some(n);
                shape.insert(((*family).to_string(), "set", name), n);
            }
        }
    }
    shape
}

fn compare(want: &Shape, got: &Shape) -> TableCheck {
    if got.is_empty() {
        return TableCheck::Missing;
    }
    for (key, n) in want {
        let (family, kind, name) = key;
        let what = if *kind == "chain" {
            "rules"
        } else {
            "elements"
        };
        match got.get(key) {
            None => return TableCheck::Differs(format!("{kind} {family} {name} is missing")),
            Some(m) if m != n => {
                return TableCheck::Differs(format!(
                    "{kind} {family} {name} has {} {what}, expected {}",
                    m.unwrap_or(0),
                    n.unwrap_or(0)
                ));
            }
            Some(_) => {}
        }
    }
    if let Some((family, kind, name)) = got.keys().find(|k| !want.contains_key(*k)) {
        return TableCheck::Differs(format!("{kind} {family} {name} is not banger's"));
    }
    TableCheck::Matches
}

/// Compare the kernel's tables with `rules`.
pub async fn verify(rules: &RuleSet) -> Result<TableCheck, NetError> {
    let mut listings = Vec::new();
    let mut missing = Vec::new();
    for family in ["inet", "bridge"] {
        match list_table(family).await? {
            Some(json) => listings.push((family, json)),
            None => missing.push(family),
        }
    }
    if listings.is_empty() {
        return Ok(TableCheck::Missing);
    }
    if let Some(f) = missing.first() {
        return Ok(TableCheck::Differs(format!("table {f} {TABLE} is missing")));
    }
    Ok(compare(&expected(&render::full(rules)), &live(&listings)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TapName;
    use crate::guest::{Egress, Guest, GuestNet};

    #[test]
    fn the_expectation_counts_chains_rules_and_elements() {
        let rs = RuleSet {
            net: GuestNet {
                bridge: "banger0".into(),
                cidr: "172.16.0.1/24".parse().unwrap(),
            },
            guests: vec![Guest {
                tap: TapName::for_vm("0123456789abcdef").unwrap(),
                ip: "172.16.0.2".parse().unwrap(),
                mac: "02:01:23:45:67:89".parse().unwrap(),
                egress: Egress::Allow(vec![]),
                ports: vec![],
            }],
            forward_guard: false,
        };
        let shape = expected(&render::full(&rs));
        let get = |f: &str, k: &'static str, n: &str| shape[&(f.to_string(), k, n.to_string())];
        assert_eq!(get("inet", "chain", "forward"), Some(6));
        assert_eq!(get("inet", "chain", "prerouting"), Some(4));
        assert_eq!(get("bridge", "set", "guests"), Some(1));
        assert_eq!(get("inet", "set", "egress"), Some(1));
        assert_eq!(get("inet", "chain", "e_0123456789ab"), Some(4));
        assert_eq!(get("bridge", "chain", "e_0123456789ab"), Some(3));
        assert_eq!(get("inet", "set", "d_0123456789ab"), None);
        assert_eq!(compare(&shape, &shape), TableCheck::Matches);
        let mut less = shape.clone();
        less.insert(("inet".into(), "chain", "forward".into()), Some(5));
        assert!(matches!(compare(&shape, &less), TableCheck::Differs(d) if d.contains("forward")));
        assert_eq!(compare(&shape, &Shape::new()), TableCheck::Missing);
    }
}

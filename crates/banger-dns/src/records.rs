//! The `<vm-name>.<domain>` zone: the record map the daemon edits at run
//! time (`DnsRecords`) and the hickory zone handler that answers from it
//! (`VmZone`).
//!
//! The map is behind a `std::sync::RwLock`, not an async one, so the daemon
//! can update it from any context (a sync reconcile step, a drop guard)
//! without a runtime; no lock is held across an await.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
    ZoneHandler, ZoneType,
};

use crate::DnsError;

/// TTL of every answer, and of negative answers (the SOA minimum). Short,
/// because VMs come and go and a deleted VM's address is handed to the next
/// one: a resolver (systemd-resolved, a guest's libc) must not keep a stale
/// answer, nor an NXDOMAIN for a VM created a second later, for long.
pub const RECORD_TTL: u32 = 5;

/// The live `<name>.<domain>` → IPv4 map. Cheap to clone (one `Arc`); every
/// clone sees every change at once, including the running server's.
#[derive(Clone, Debug)]
pub struct DnsRecords {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The zone apex, e.g. `vm.` (always fully qualified).
    origin: Name,
    lower_origin: LowerName,
    soa: Arc<RecordSet>,
    names: RwLock<HashMap<LowerName, Entry>>,
    /// Names of suspended VMs: a query for one is also a request to wake
    /// it, sent to whoever listens ([`DnsRecords::wake_requests`]).
    asleep: Mutex<Asleep>,
}

#[derive(Debug, Default)]
struct Asleep {
    names: HashSet<LowerName>,
    tx: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

#[derive(Debug)]
struct Entry {
    /// The VM name as the daemon gave it (lookups ignore case).
    name: String,
    ip: Ipv4Addr,
    rrset: Arc<RecordSet>,
}

impl DnsRecords {
    /// An empty zone for `domain` (e.g. `vm`; a trailing dot is accepted,
    /// more than one label is allowed: `banger.internal`).
    pub fn new(domain: &str) -> Result<Self, DnsError> {
        let origin = parse_domain(domain)?;
        let soa = soa_record(&origin)?;
        Ok(Self {
            inner: Arc::new(Inner {
                lower_origin: LowerName::new(&origin),
                origin,
                soa: Arc::new(soa),
                names: RwLock::new(HashMap::new()),
                asleep: Mutex::new(Asleep::default()),
            }),
        })
    }

    /// The zone's domain without the trailing dot, e.g. `vm`.
    pub fn domain(&self) -> String {
        self.inner
            .origin
            .to_string()
            .trim_end_matches('.')
            .to_owned()
    }

    /// Points `<name>.<domain>` at `ip`, replacing any address it had: a VM
    /// has one address on the bridge.
    pub fn upsert(&self, name: &str, ip: Ipv4Addr) -> Result<(), DnsError> {
        let fqdn = self.fqdn(name)?;
        let mut rrset = RecordSet::with_ttl(fqdn.clone(), RecordType::A, RECORD_TTL);
        rrset.insert(
            Record::from_rdata(fqdn.clone(), RECORD_TTL, RData::A(A(ip))),
            0,
        );
        let entry = Entry {
            name: name.to_owned(),
            ip,
            rrset: Arc::new(rrset),
        };
        self.write().insert(LowerName::new(&fqdn), entry);
        Ok(())
    }

    /// Forgets `<name>.<domain>`; queries for it get NXDOMAIN from now on.
    /// Returns whether the name was there.
    pub fn remove(&self, name: &str) -> Result<bool, DnsError> {
        let key = LowerName::new(&self.fqdn(name)?);
        Ok(self.write().remove(&key).is_some())
    }

    /// The address `<name>.<domain>` resolves to, if any.
    pub fn get(&self, name: &str) -> Result<Option<Ipv4Addr>, DnsError> {
        let key = LowerName::new(&self.fqdn(name)?);
        Ok(self.read().get(&key).map(|e| e.ip))
    }

    /// Marks `<name>.<domain>` as a suspended VM's (or awake again): while
    /// asleep, a query for it still gets its address and also asks the
    /// listener of [`Self::wake_requests`] to wake the VM, so the
    /// connection that follows the lookup finds it waking already.
    pub fn set_asleep(&self, name: &str, asleep: bool) -> Result<(), DnsError> {
        let key = LowerName::new(&self.fqdn(name)?);
        let mut a = self.asleep();
        if asleep {
            a.names.insert(key);
        } else {
            a.names.remove(&key);
        }
        Ok(())
    }

    /// The VM names whose lookups asked for a wake, from now on (a new
    /// call replaces the previous listener).
    pub fn wake_requests(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.asleep().tx = Some(tx);
        rx
    }

    fn asleep(&self) -> std::sync::MutexGuard<'_, Asleep> {
        self.inner
            .asleep
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every record as `(vm-name, ip)`, sorted by name: for `doctor`, tests
    /// and reconcile (compare with what the store says).
    pub fn list(&self) -> Vec<(String, Ipv4Addr)> {
        let mut out: Vec<(String, Ipv4Addr)> = self
            .read()
            .values()
            .map(|e| (e.name.clone(), e.ip))
            .collect();
        out.sort();
        out
    }

    /// Replaces the whole map in one step (daemon start: the records are
    /// whatever the store says is running), so no query sees a half-filled zone.
    pub fn replace_all<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a str, Ipv4Addr)>,
    ) -> Result<(), DnsError> {
        let fresh = Self::new(&self.domain())?;
        for (name, ip) in records {
            fresh.upsert(name, ip)?;
        }
        let map = std::mem::take(&mut *fresh.write());
        *self.write() = map;
        Ok(())
    }

    /// The zone handler the server's catalog serves this map through.
    pub(crate) fn zone(&self) -> VmZone {
        VmZone {
            records: self.clone(),
        }
    }

    pub(crate) fn origin(&self) -> &LowerName {
        &self.inner.lower_origin
    }

    /// `<name>.<domain>.` for a VM name, which must be one DNS label: a name
    /// with a dot would land in another VM's subtree or outside the zone.
    fn fqdn(&self, name: &str) -> Result<Name, DnsError> {
        let invalid = |reason: &str| DnsError::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if name.is_empty() || name.len() > 63 {
            return Err(invalid("must be 1-63 characters"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || name.starts_with('-')
            || name.ends_with('-')
        {
            return Err(invalid(
                "must be one DNS label: letters, digits and inner hyphens",
            ));
        }
        let label = Name::from_ascii(name).map_err(|e| invalid(&e.to_string()))?;
        label
            .append_domain(&self.inner.origin)
            .map_err(|e| invalid(&e.to_string()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<LowerName, Entry>> {
        // A panic while holding the lock cannot leave the map half-changed
        // (each change is one insert or remove), so a poisoned lock is usable.
        self.inner
            .names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<LowerName, Entry>> {
        self.inner
            .names
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer for one query inside the zone.
    fn lookup(&self, name: &LowerName, rtype: RecordType) -> Result<AuthLookup, LookupError> {
        let options = LookupOptions::default();
        if *name == self.inner.lower_origin {
            if rtype == RecordType::SOA {
                let soa = LookupRecords::new(options, self.inner.soa.clone());
                return Ok(AuthLookup::answers(soa, None));
            }
            return Err(LookupError::NameExists);
        }
        let names = self.read();
        let found = names.get(name);
        if let Some(entry) = found {
            let a = self.asleep();
            if a.names.contains(name)
                && let Some(tx) = &a.tx
            {
                let _ = tx.send(entry.name.clone());
            }
        }
        match found {
            Some(entry) if rtype == RecordType::A => Ok(AuthLookup::answers(
                LookupRecords::new(options, entry.rrset.clone()),
                None,
            )),
            // The name exists but has no data of this type (AAAA above all):
            // NOERROR with no answer, so a resolver asking A and AAAA in
            // parallel uses the A answer instead of giving up on NXDOMAIN.
            Some(_) => Err(LookupError::NameExists),
            None => Err(LookupError::from(ResponseCode::NXDomain)),
        }
    }
}

/// The hickory face of a `DnsRecords`: an authoritative (primary) zone, so
/// the catalog sets the AA flag and puts the SOA in negative answers.
#[derive(Debug)]
pub(crate) struct VmZone {
    records: DnsRecords,
}

#[async_trait::async_trait]
impl ZoneHandler for VmZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        // Listing every VM is nobody's business on the bridge.
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        self.records.origin()
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Break(self.records.lookup(name, rtype))
    }

    async fn search(
        &self,
        request: &Request,
        _lookup_options: LookupOptions,
    ) -> (
        LookupControlFlow<AuthLookup>,
        Option<hickory_server::proto::rr::TSigResponseContext>,
    ) {
        let result = match request.request_info() {
            Ok(info) => self
                .records
                .lookup(info.query.name(), info.query.query_type()),
            Err(e) => Err(e),
        };
        (LookupControlFlow::Break(result), None)
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        // The zone is not signed; hickory only asks for NSEC under DNSSEC.
        LookupControlFlow::Break(Ok(AuthLookup::default()))
    }
}

fn parse_domain(domain: &str) -> Result<Name, DnsError> {
    let invalid = |reason: String| DnsError::InvalidDomain {
        domain: domain.to_owned(),
        reason,
    };
    let trimmed = domain.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(invalid("must not be empty or the root".into()));
    }
    let mut name = Name::from_ascii(trimmed).map_err(|e| invalid(e.to_string()))?;
    name.set_fqdn(true);
    Ok(name)
}

/// A synthetic SOA: the zone exists only in this process, so the names in
/// it are placeholders; `minimum` is what matters (negative-cache TTL).
fn soa_record(origin: &Name) -> Result<RecordSet, DnsError> {
    let bad = |e: hickory_server::proto::ProtoError| DnsError::InvalidDomain {
        domain: origin.to_string(),
        reason: e.to_string(),
    };
    let mname = Name::from_ascii("ns")
        .map_err(bad)?
        .append_domain(origin)
        .map_err(bad)?;
    let rname = Name::from_ascii("hostmaster")
        .map_err(bad)?
        .append_domain(origin)
        .map_err(bad)?;
    let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, RECORD_TTL);
    let mut rrset = RecordSet::with_ttl(origin.clone(), RecordType::SOA, RECORD_TTL);
    rrset.insert(
        Record::from_rdata(origin.clone(), RECORD_TTL, RData::SOA(soa)),
        0,
    );
    Ok(rrset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).unwrap())
    }

    /// A lookup of a suspended VM's name still answers, and asks for a
    /// wake; awake names and unknown ones do not.
    #[test]
    fn asleep_names_ask_for_a_wake() {
        let r = DnsRecords::new("vm").unwrap();
        r.upsert("web", Ipv4Addr::new(172, 16, 0, 2)).unwrap();
        r.upsert("db", Ipv4Addr::new(172, 16, 0, 3)).unwrap();
        let mut wakes = r.wake_requests();
        r.set_asleep("web", true).unwrap();
        assert!(r.lookup(&lower("WEB.vm."), RecordType::A).is_ok());
        assert!(r.lookup(&lower("web.vm."), RecordType::AAAA).is_err());
        assert!(r.lookup(&lower("db.vm."), RecordType::A).is_ok());
        assert!(r.lookup(&lower("nope.vm."), RecordType::A).is_err());
        assert_eq!(wakes.try_recv().unwrap(), "web");
        assert_eq!(wakes.try_recv().unwrap(), "web", "any type asks");
        assert!(wakes.try_recv().is_err(), "db is awake, nope unknown");
        r.set_asleep("web", false).unwrap();
        assert!(r.lookup(&lower("web.vm."), RecordType::A).is_ok());
        assert!(wakes.try_recv().is_err());
    }

    #[test]
    fn upsert_remove_and_case() {
        let r = DnsRecords::new("vm").unwrap();
        r.upsert("web", Ipv4Addr::new(172, 16, 0, 2)).unwrap();
        assert_eq!(r.get("WEB").unwrap(), Some(Ipv4Addr::new(172, 16, 0, 2)));
        r.upsert("web", Ipv4Addr::new(172, 16, 0, 3)).unwrap();
        assert_eq!(r.list(), vec![("web".into(), Ipv4Addr::new(172, 16, 0, 3))]);
        assert!(r.lookup(&lower("Web.VM."), RecordType::A).is_ok());
        assert!(matches!(
            r.lookup(&lower("web.vm."), RecordType::AAAA),
            Err(LookupError::NameExists)
        ));
        assert!(r.remove("web").unwrap());
        assert!(!r.remove("web").unwrap());
        let err = r.lookup(&lower("web.vm."), RecordType::A).unwrap_err();
        assert!(err.is_nx_domain());
    }

    #[test]
    fn names_must_be_one_label() {
        let r = DnsRecords::new("vm.").unwrap();
        for bad in ["", "a.b", "-x", "x-", "a_b", &"x".repeat(64)] {
            let err = r.upsert(bad, Ipv4Addr::LOCALHOST).unwrap_err();
            assert!(err.to_string().contains("invalid VM name"), "{bad}: {err}");
        }
        assert!(DnsRecords::new("").is_err());
        assert!(DnsRecords::new(".").is_err());
    }

    #[test]
    fn multi_label_domain_and_replace_all() {
        let r = DnsRecords::new("banger.internal").unwrap();
        assert_eq!(r.domain(), "banger.internal");
        r.upsert("old", Ipv4Addr::new(10, 0, 0, 9)).unwrap();
        r.replace_all([
            ("a", Ipv4Addr::new(10, 0, 0, 2)),
            ("b", Ipv4Addr::new(10, 0, 0, 3)),
        ])
        .unwrap();
        assert_eq!(
            r.list(),
            vec![
                ("a".into(), Ipv4Addr::new(10, 0, 0, 2)),
                ("b".into(), Ipv4Addr::new(10, 0, 0, 3))
            ]
        );
        assert!(r.replace_all([("bad.name", Ipv4Addr::LOCALHOST)]).is_err());
        assert_eq!(r.list().len(), 2, "a failed replace changes nothing");
    }
}

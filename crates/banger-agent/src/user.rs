//! Who an exec runs as: a user spec in the OCI image config's `User` syntax
//! (`user` or `user:group`, each a name or a number) resolved against the
//! guest's `/etc/passwd` and `/etc/group`, as Docker resolves it.
//!
//! The files are parsed here rather than through getpwnam(3): the agent is
//! a static binary, and glibc's NSS lookups do not work from one.

use std::fmt;
use std::io;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";
/// Docker's bound: ids are non-negative `i32`s, and `u32::MAX` means
/// "unchanged" to setuid(2).
const MAX_ID: u32 = 0x7fff_ffff;

/// The credentials and home of the process to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary gid, then every group that lists
    /// the user's name, in file order, without repeats.
    pub groups: Vec<u32>,
    /// The passwd entry's home; for a uid without an entry, `/` (as
    /// Docker), except `/root` for uid 0.
    pub home: String,
    /// The passwd entry's name, when the user has one.
    pub name: Option<String>,
}

/// Why a user spec cannot be resolved.
#[derive(Debug)]
pub enum UserError {
    /// The spec has an empty user or group part (`""`, `":g"`, `"u:"`).
    Malformed(String),
    /// A name that no passwd entry has.
    UnknownUser(String),
    /// A name that no group entry has.
    UnknownGroup(String),
    /// A number beyond [`MAX_ID`].
    OutOfRange { what: &'static str, value: String },
    /// `/etc/passwd` or `/etc/group` exists but cannot be read.
    Read {
        path: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::Malformed(spec) => {
                write!(f, "invalid user {spec:?}: expected USER[:GROUP]")
            }
            UserError::UnknownUser(name) => {
                write!(
                    f,
                    "unable to find user {name}: no matching entries in passwd file"
                )
            }
            UserError::UnknownGroup(name) => {
                write!(
                    f,
                    "unable to find group {name}: no matching entries in group file"
                )
            }
            UserError::OutOfRange { what, value } => {
                write!(f, "{what} {value} is out of range (0-{MAX_ID})")
            }
            UserError::Read { path, source } => write!(f, "read {path}: {source}"),
        }
    }
}

/// One line of `/etc/passwd`.
#[derive(Debug, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

/// One line of `/etc/group`.
#[derive(Debug, PartialEq, Eq)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// The meaningful lines of a colon-separated database: comments, blank
/// lines and NIS `+`/`-` lines are not entries.
fn lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
        .map(|l| l.split(':').collect())
}

/// `name:password:uid:gid:gecos:home:shell`. Lines without a name or with
/// a non-numeric uid or gid are skipped, as libc skips them; missing
/// trailing fields are empty.
fn parse_passwd(text: &str) -> Vec<PasswdEntry<'_>> {
    lines(text)
        .filter_map(|f| {
            let field = |i: usize| f.get(i).copied().unwrap_or("");
            Some(PasswdEntry {
                name: Some(field(0)).filter(|n| !n.is_empty())?,
                uid: field(2).parse().ok()?,
                gid: field(3).parse().ok()?,
                home: field(5),
            })
        })
        .collect()
}

/// `name:password:gid:member,member`.
fn parse_group(text: &str) -> Vec<GroupEntry<'_>> {
    lines(text)
        .filter_map(|f| {
            let field = |i: usize| f.get(i).copied().unwrap_or("");
            Some(GroupEntry {
                name: Some(field(0)).filter(|n| !n.is_empty())?,
                gid: field(2).parse().ok()?,
                members: field(3)
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect(),
            })
        })
        .collect()
}

/// `Some(n)` for an all-digit string, `None` for a name.
fn numeric(what: &'static str, s: &str) -> Result<Option<u32>, UserError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_ID => Ok(Some(n)),
        _ => Err(UserError::OutOfRange {
            what,
            value: s.to_owned(),
        }),
    }
}

/// Resolves `spec` against the texts of a passwd and a group file (empty
/// when the file does not exist).
///
/// A number is a uid or gid whether or not an entry has it; a name must
/// have an entry. An explicit group replaces the passwd entry's gid.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Identity, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() || group_part == Some("") {
        return Err(UserError::Malformed(spec.to_owned()));
    }
    let users = parse_passwd(passwd);
    let (uid, mut gid, home, name) = match numeric("uid", user_part)? {
        Some(uid) => match users.iter().find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, e.home, Some(e.name)),
            None => (uid, 0, if uid == 0 { "/root" } else { "/" }, None),
        },
        None => match users.iter().find(|e| e.name == user_part) {
            Some(e) => (e.uid, e.gid, e.home, Some(e.name)),
            None => return Err(UserError::UnknownUser(user_part.to_owned())),
        },
    };
    let groups_db = parse_group(group);
    if let Some(g) = group_part {
        gid = match numeric("gid", g)? {
            Some(n) => n,
            None => match groups_db.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => return Err(UserError::UnknownGroup(g.to_owned())),
            },
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = name {
        for e in &groups_db {
            if e.members.contains(&name) && !groups.contains(&e.gid) {
                groups.push(e.gid);
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home: if home.is_empty() { "/" } else { home }.to_owned(),
        name: name.map(str::to_owned),
    })
}

/// Resolves `spec` against the guest's own files.
pub fn lookup(spec: &str) -> Result<Identity, UserError> {
    let read = |path: &'static str| match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(UserError::Read { path, source }),
    };
    resolve(spec, &read(PASSWD)?, &read(GROUP)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment

+nisuser::::::
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App User,,,:/home/app:/bin/sh
broken:x:notanumber:1:::
short:x:1001:1001
:x:1002:1002::/nowhere:/bin/sh
";
    const GROUP_TEXT: &str = "\
root:x:0:
wheel:x:10:root,app
staff:x:50: app , daemon
app:x:1000:app
bad:x:zz:app
users:x:100:
";

    fn ok(spec: &str) -> Identity {
        resolve(spec, PASSWD_TEXT, GROUP_TEXT).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    fn err(spec: &str) -> String {
        resolve(spec, PASSWD_TEXT, GROUP_TEXT)
            .expect_err(spec)
            .to_string()
    }

    #[test]
    fn passwd_skips_comments_nis_and_broken_lines() {
        let names: Vec<_> = parse_passwd(PASSWD_TEXT).iter().map(|e| e.name).collect();
        assert_eq!(names, ["root", "daemon", "app", "short"]);
        let short = &parse_passwd(PASSWD_TEXT)[3];
        assert_eq!((short.uid, short.gid, short.home), (1001, 1001, ""));
    }

    #[test]
    fn group_members_are_split_and_trimmed() {
        let groups = parse_group(GROUP_TEXT);
        let staff = groups.iter().find(|g| g.name == "staff").unwrap();
        assert_eq!(
            (staff.gid, &staff.members[..]),
            (50, &["app", "daemon"][..])
        );
        assert!(groups.iter().all(|g| g.name != "bad"));
        assert!(
            groups
                .iter()
                .find(|g| g.name == "users")
                .unwrap()
                .members
                .is_empty()
        );
    }

    #[test]
    fn name_takes_the_entry_and_its_groups() {
        assert_eq!(
            ok("app"),
            Identity {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 10, 50],
                home: "/home/app".into(),
                name: Some("app".into()),
            }
        );
    }

    #[test]
    fn uid_with_an_entry_is_that_user() {
        assert_eq!(ok("1000"), ok("app"));
        let root = ok("0");
        assert_eq!((root.uid, root.gid, &root.groups[..]), (0, 0, &[0, 10][..]));
        assert_eq!(root.home, "/root");
    }

    #[test]
    fn name_and_group_name() {
        let id = ok("app:staff");
        assert_eq!((id.uid, id.gid), (1000, 50));
        assert_eq!(id.groups, [50, 10, 1000]);
    }

    #[test]
    fn uid_and_gid() {
        let id = ok("1000:5678");
        assert_eq!(
            (id.uid, id.gid, &id.groups[..]),
            (1000, 5678, &[5678, 10, 50, 1000][..])
        );
    }

    #[test]
    fn name_and_gid() {
        let id = ok("daemon:100");
        assert_eq!((id.uid, id.gid, &id.groups[..]), (1, 100, &[100, 50][..]));
        assert_eq!(id.home, "/usr/sbin");
    }

    #[test]
    fn uid_and_group_name() {
        let id = ok("1234:wheel");
        assert_eq!((id.uid, id.gid, &id.groups[..]), (1234, 10, &[10][..]));
        assert_eq!((id.home.as_str(), id.name), ("/", None));
    }

    #[test]
    fn numeric_without_entry_is_allowed() {
        let id = ok("1234");
        assert_eq!(
            id,
            Identity {
                uid: 1234,
                gid: 0,
                groups: vec![0],
                home: "/".into(),
                name: None,
            }
        );
        let id = ok("1234:5678");
        assert_eq!((id.uid, id.gid, &id.groups[..]), (1234, 5678, &[5678][..]));
    }

    #[test]
    fn without_files_numbers_still_resolve() {
        let id = resolve("0", "", "").unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (0, 0, "/root"));
        assert!(matches!(
            resolve("app", "", ""),
            Err(UserError::UnknownUser(n)) if n == "app"
        ));
        assert!(matches!(
            resolve("0:staff", PASSWD_TEXT, ""),
            Err(UserError::UnknownGroup(n)) if n == "staff"
        ));
    }

    #[test]
    fn empty_home_is_root_dir() {
        assert_eq!(ok("short").home, "/");
    }

    #[test]
    fn unknown_user() {
        assert_eq!(
            err("nobodyx"),
            "unable to find user nobodyx: no matching entries in passwd file"
        );
        assert_eq!(
            err("nobodyx:staff"),
            "unable to find user nobodyx: no matching entries in passwd file"
        );
    }

    #[test]
    fn unknown_group() {
        assert_eq!(
            err("app:nogroup"),
            "unable to find group nogroup: no matching entries in group file"
        );
    }

    #[test]
    fn malformed_and_out_of_range() {
        for spec in ["", ":staff", "app:"] {
            assert!(
                matches!(
                    resolve(spec, PASSWD_TEXT, GROUP_TEXT),
                    Err(UserError::Malformed(_))
                ),
                "{spec:?}"
            );
        }
        assert_eq!(
            err("2147483648"),
            "uid 2147483648 is out of range (0-2147483647)"
        );
        assert_eq!(
            err("app:99999999999"),
            "gid 99999999999 is out of range (0-2147483647)"
        );
        assert_eq!(ok("2147483647").uid, 2_147_483_647);
    }
}

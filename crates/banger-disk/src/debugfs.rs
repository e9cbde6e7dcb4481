//! Everything that talks to `debugfs`: batched owner fix-ups as one
//! `debugfs -w -f -` script, and the readers (`stat`, `cat`, `ls -p`).
//!
//! debugfs exits 0 even when a command fails, so failure is detected from
//! its stderr: everything but the version banner it prints there is an error.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;

use crate::DiskError;
use crate::inode::{DirEntry, Ext4Stat, FileKind, OwnerFix};
use crate::tool::Tool;

/// Apply `fixes` to the image with a single `debugfs -w` run.
pub fn apply_owners(image: &Path, fixes: &[OwnerFix]) -> Result<(), DiskError> {
    if fixes.is_empty() {
        return Ok(());
    }
    let script = owner_script(fixes)?;
    run_script(image, "apply_owners", &["-w"], &script).map(drop)
}

/// Put one regular file with `contents` at `guest_path` in an existing
/// image, replacing any file there, owned by `uid:gid` with `perm`. Its
/// parent directory is created when missing with `dir_perm` and the same
/// owner (an existing one keeps its own). One `debugfs -w` run; the
/// contents pass through a private temporary file next to the image.
pub fn put_file(
    image: &Path,
    guest_path: &str,
    contents: &[u8],
    (uid, gid, perm): (u32, u32, u32),
    dir_perm: u32,
) -> Result<(), DiskError> {
    let dest = quote(guest_path)?;
    let parent = match guest_path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((p, _)) => p.to_string(),
    };
    let mut script = String::new();
    if parent != "/" && stat(image, &parent).is_err() {
        let dir = quote(&parent)?;
        let _ = writeln!(script, "mkdir {dir}");
        let mode = FileKind::Directory.type_bits() | (dir_perm & 0o7777);
        let _ = writeln!(script, "set_inode_field {dir} uid {uid}");
        let _ = writeln!(script, "set_inode_field {dir} gid {gid}");
        let _ = writeln!(script, "set_inode_field {dir} mode {mode}");
    }
    if stat(image, guest_path).is_ok() {
        let _ = writeln!(script, "rm {dest}");
    }
    let dir = image.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| DiskError::io("create temporary file", dir, e))?;
    std::io::Write::write_all(&mut tmp, contents)
        .map_err(|e| DiskError::io("write temporary file", tmp.path(), e))?;
    let host = std::path::absolute(tmp.path())
        .map_err(|e| DiskError::io("resolve temporary file", tmp.path(), e))?;
    let _ = writeln!(
        script,
        "write {} {dest}",
        quote(&host.display().to_string())?
    );
    let _ = writeln!(
        script,
        "{}",
        owner_script(&[OwnerFix {
            guest_path: guest_path.to_string(),
            uid,
            gid,
            kind: FileKind::Regular,
            perm: Some(perm),
        }])?
        .trim_end()
    );
    run_script(image, "put_file", &["-w"], &script).map(drop)
}

/// Build the debugfs script for `fixes`: one `set_inode_field` per field.
pub(crate) fn owner_script(fixes: &[OwnerFix]) -> Result<String, DiskError> {
    let mut script = String::new();
    for fix in fixes {
        let path = quote(&fix.guest_path)?;
        // Writing to a String cannot fail.
        let _ = writeln!(script, "set_inode_field {path} uid {}", fix.uid);
        let _ = writeln!(script, "set_inode_field {path} gid {}", fix.gid);
        if let Some(perm) = fix.perm {
            let mode = fix.kind.type_bits() | (perm & 0o7777);
            let _ = writeln!(script, "set_inode_field {path} mode {mode}");
        }
    }
    Ok(script)
}

/// Quote a guest path for debugfs's command parser (libss): inside double
/// quotes everything is literal except `"`, which is written twice. A
/// script is line based, so newlines cannot be expressed at all.
pub(crate) fn quote(guest_path: &str) -> Result<String, DiskError> {
    let invalid = |reason| DiskError::InvalidGuestPath {
        path: guest_path.to_string(),
        reason,
    };
    if !guest_path.starts_with('/') {
        return Err(invalid("not absolute"));
    }
    if guest_path.contains(['\n', '\r', '\0']) {
        return Err(invalid("contains a newline or NUL"));
    }
    Ok(format!("\"{}\"", guest_path.replace('"', "\"\"")))
}

/// Run one debugfs request or script and return its stdout, failing if it
/// printed any error.
fn run_script(
    image: &Path,
    op: &'static str,
    flags: &[&str],
    script: &str,
) -> Result<Vec<u8>, DiskError> {
    let mut args: Vec<&OsStr> = flags.iter().map(OsStr::new).collect();
    args.extend([OsStr::new("-f"), OsStr::new("-"), image.as_os_str()]);
    let out = Tool::Debugfs.output(image, args, Some(script.as_bytes()))?;
    check(image, op, &out)?;
    Ok(out.stdout)
}

fn request(image: &Path, op: &'static str, request: &str) -> Result<Vec<u8>, DiskError> {
    let args = [OsStr::new("-R"), OsStr::new(request), image.as_os_str()];
    let out = Tool::Debugfs.output(image, args, None)?;
    check(image, op, &out)?;
    Ok(out.stdout)
}

fn check(image: &Path, op: &'static str, out: &std::process::Output) -> Result<(), DiskError> {
    if !out.status.success() {
        return Err(Tool::Debugfs.failed(image, out));
    }
    let errors = stderr_errors(&String::from_utf8_lossy(&out.stderr));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DiskError::Debugfs {
            op,
            image: image.to_path_buf(),
            errors,
        })
    }
}

/// The error lines of debugfs's stderr: all but the banner, e.g.
/// `debugfs 1.47.0 (5-Feb-2023)`.
pub(crate) fn stderr_errors(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter(|line| {
            !(line.starts_with("debugfs ") && line[8..].starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_string)
        .collect()
}

/// The content of the regular file at `guest_path`.
pub fn read_file(image: &Path, guest_path: &str) -> Result<Vec<u8>, DiskError> {
    let st = stat(image, guest_path)?;
    if st.kind != FileKind::Regular {
        return Err(DiskError::Parse {
            image: image.to_path_buf(),
            guest_path: guest_path.to_string(),
            detail: format!("not a regular file but {:?}", st.kind),
        });
    }
    request(image, "cat", &format!("cat {}", quote(guest_path)?))
}

/// `stat` the inode at `guest_path` (a final symlink is not followed).
pub fn stat(image: &Path, guest_path: &str) -> Result<Ext4Stat, DiskError> {
    let out = request(image, "stat", &format!("stat {}", quote(guest_path)?))?;
    let text = String::from_utf8_lossy(&out);
    let mut st = parse_stat(&text).map_err(|detail| DiskError::Parse {
        image: image.to_path_buf(),
        guest_path: guest_path.to_string(),
        detail,
    })?;
    if st.kind == FileKind::Symlink && st.symlink_target.is_none() {
        // A target too long for the inode lives in a data block; `cat` of the
        // symlink's own inode prints it.
        let mut target = request(image, "cat", &format!("cat {}", quote(guest_path)?))?;
        target.truncate(usize::try_from(st.size).unwrap_or(usize::MAX));
        st.symlink_target = Some(target);
    }
    Ok(st)
}

/// Parse debugfs `stat` output.
pub(crate) fn parse_stat(text: &str) -> Result<Ext4Stat, String> {
    let mut fields = std::collections::HashMap::new();
    let mut symlink_target = None;
    let mut device = None;
    for line in text.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("Fast link dest: ") {
            let target = rest.strip_prefix('"').and_then(|r| r.strip_suffix('"'));
            symlink_target = Some(target.ok_or("unquoted fast link dest")?.as_bytes().to_vec());
            continue;
        }
        if let Some(rest) = line
            .trim_start()
            .strip_prefix("Device major/minor number: ")
        {
            // "01:03 (hex 01:03)": the first pair is decimal.
            let pair = rest.split_whitespace().next().unwrap_or_default();
            let (major, minor) = pair.split_once(':').ok_or("bad device number")?;
            let num = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| format!("bad device number {pair}"))
            };
            device = Some((num(major)?, num(minor)?));
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        for pair in tokens.windows(2) {
            if let Some(key) = pair[0].strip_suffix(':') {
                fields.entry(key.to_string()).or_insert(pair[1].to_string());
            }
        }
    }
    let get = |key: &str| fields.get(key).ok_or_else(|| format!("no {key} field"));
    let num = |key: &str| -> Result<u64, String> {
        get(key)?
            .parse::<u64>()
            .map_err(|_| format!("bad {key} field"))
    };
    let small = |key: &str| -> Result<u32, String> {
        u32::try_from(num(key)?).map_err(|_| format!("{key} out of range"))
    };
    let kind = match get("Type")?.as_str() {
        "regular" => FileKind::Regular,
        "directory" => FileKind::Directory,
        "symlink" => FileKind::Symlink,
        "character" => FileKind::CharDevice,
        "block" => FileKind::BlockDevice,
        "FIFO" => FileKind::Fifo,
        "socket" => FileKind::Socket,
        other => return Err(format!("unknown inode type {other}")),
    };
    let perm = u32::from_str_radix(get("Mode")?, 8).map_err(|_| "bad Mode field".to_string())?;
    Ok(Ext4Stat {
        inode: num("Inode")?,
        kind,
        uid: small("User")?,
        gid: small("Group")?,
        perm: perm & 0o7777,
        size: num("Size")?,
        links: small("Links")?,
        device,
        symlink_target,
    })
}

/// The entries of the directory at `guest_path`, without `.` and `..`.
pub fn list_dir(image: &Path, guest_path: &str) -> Result<Vec<DirEntry>, DiskError> {
    let out = request(image, "ls", &format!("ls -p {}", quote(guest_path)?))?;
    parse_ls(&String::from_utf8_lossy(&out)).map_err(|detail| DiskError::Parse {
        image: image.to_path_buf(),
        guest_path: guest_path.to_string(),
        detail,
    })
}

/// Parse `ls -p` lines: `/inode/mode/uid/gid/name/size/`.
pub(crate) fn parse_ls(text: &str) -> Result<Vec<DirEntry>, String> {
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split('/').collect();
        let [_, ino, mode, uid, gid, name, _size, _] = parts.as_slice() else {
            return Err(format!("bad ls line {line:?}"));
        };
        if *name == "." || *name == ".." {
            continue;
        }
        let bad = |what: &str| format!("bad {what} in ls line {line:?}");
        let mode = u32::from_str_radix(mode, 8).map_err(|_| bad("mode"))?;
        entries.push(DirEntry {
            name: (*name).to_string(),
            inode: ino.parse().map_err(|_| bad("inode"))?,
            kind: FileKind::from_mode(mode).ok_or_else(|| bad("type"))?,
            uid: uid.parse().map_err(|_| bad("uid"))?,
            gid: gid.parse().map_err(|_| bad("gid"))?,
            perm: mode & 0o7777,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_spaces_and_doubles_quotes() {
        assert_eq!(quote("/etc/a b\"c").unwrap(), "\"/etc/a b\"\"c\"");
        assert_eq!(quote("/plain").unwrap(), "\"/plain\"");
    }

    #[test]
    fn rejects_relative_and_multiline_paths() {
        assert!(matches!(
            quote("etc/x"),
            Err(DiskError::InvalidGuestPath { .. })
        ));
        assert!(matches!(
            quote("/a\nb"),
            Err(DiskError::InvalidGuestPath { .. })
        ));
    }

    #[test]
    fn script_sets_mode_with_type_bits() {
        let fixes = [
            OwnerFix {
                guest_path: "/usr/bin/su".into(),
                uid: 0,
                gid: 0,
                kind: FileKind::Regular,
                perm: Some(0o4755),
            },
            OwnerFix {
                guest_path: "/home/u".into(),
                uid: 1000,
                gid: 1000,
                kind: FileKind::Directory,
                perm: None,
            },
        ];
        let script = owner_script(&fixes).unwrap();
        assert_eq!(
            script,
            "set_inode_field \"/usr/bin/su\" uid 0\n\
             set_inode_field \"/usr/bin/su\" gid 0\n\
             set_inode_field \"/usr/bin/su\" mode 35309\n\
             set_inode_field \"/home/u\" uid 1000\n\
             set_inode_field \"/home/u\" gid 1000\n"
        );
        assert_eq!(0o104755, 35309);
    }

    #[test]
    fn banner_is_not_an_error() {
        let errs = stderr_errors(
            "debugfs 1.47.0 (5-Feb-2023)\n/nonexist: File not found by ext2_lookup \n",
        );
        assert_eq!(
            errs,
            vec!["/nonexist: File not found by ext2_lookup".to_string()]
        );
        assert!(stderr_errors("debugfs 1.47.0 (5-Feb-2023)\n").is_empty());
    }

    const CHAR_STAT: &str = "Inode: 13   Type: character special    Mode:  0644   Flags: 0x0
Generation: 0    Version: 0x00000000:00000000
User:     0   Group:     5   Project:     0   Size: 0
File ACL: 0
Links: 1   Blockcount: 0
Fragment:  Address: 0    Number: 0    Size: 0
 ctime: 0x6b026d62:00000000 -- Sun Nov 22 04:19:46 2026
Size of extra inode fields: 32
Device major/minor number: 01:03 (hex 01:03)
";

    #[test]
    fn parses_device_stat() {
        let st = parse_stat(CHAR_STAT).unwrap();
        assert_eq!(st.kind, FileKind::CharDevice);
        assert_eq!((st.uid, st.gid, st.perm, st.links), (0, 5, 0o644, 1));
        assert_eq!(st.device, Some((1, 3)));
        assert_eq!(st.inode, 13);
    }

    #[test]
    fn parses_fast_symlink_with_spaces() {
        let text = "Inode: 17   Type: symlink    Mode:  0777   Flags: 0x0
User:  1000   Group:  1000   Project:     0   Size: 7
Links: 1   Blockcount: 0
Fast link dest: \"/a b/\"c\"
";
        let st = parse_stat(text).unwrap();
        assert_eq!(st.kind, FileKind::Symlink);
        assert_eq!(st.uid, 1000);
        assert_eq!(st.symlink_target.as_deref(), Some(&b"/a b/\"c"[..]));
    }

    #[test]
    fn parses_setuid_mode() {
        let text = "Inode: 20   Type: regular    Mode:  4755   Flags: 0x80000
User:     0   Group:     0   Project:     0   Size: 12345678901
Links: 2   Blockcount: 8
";
        let st = parse_stat(text).unwrap();
        assert_eq!((st.perm, st.size, st.links), (0o4755, 12345678901, 2));
    }

    #[test]
    fn stat_without_type_is_an_error() {
        assert!(parse_stat("garbage\n").is_err());
    }

    #[test]
    fn parses_ls_p() {
        let text = "/2/040755/0/0/.//\n/2/040755/0/0/..//\n/15/100755/0/1000/hl/3/\n/17/120777/0/0/a b/6/\n";
        let entries = parse_ls(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "hl");
        assert_eq!(entries[0].kind, FileKind::Regular);
        assert_eq!((entries[0].gid, entries[0].perm), (1000, 0o755));
        assert_eq!(entries[1].name, "a b");
        assert_eq!(entries[1].kind, FileKind::Symlink);
        assert!(parse_ls("/x/y\n").is_err());
    }
}

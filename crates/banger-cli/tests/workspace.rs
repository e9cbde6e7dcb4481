//! Workspaces and `[[file_sync]]` end to end: real git on the host, a real
//! Debian guest (with git) booted under QEMU, the real CLI and daemon.

use std::path::Path;
use std::process::Command;

use banger_testkit::{TestHome, agent_bin, boot_home, debian_rootfs_tar, kernel_deb, require_tool};

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Host Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@host")
        .env("GIT_COMMITTER_NAME", "Host Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@host")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `banger ARGS` → (exit code, stdout, stderr).
fn banger(home: &TestHome, args: &[&str]) -> (i32, String, String) {
    home.outcome(args)
}

fn host_state(repo: &Path) -> (String, String, String) {
    (
        git(repo, &["rev-parse", "HEAD"]),
        git(repo, &["symbolic-ref", "HEAD"]),
        git(repo, &["status", "--porcelain", "--untracked-files=all"]),
    )
}

#[test]
fn file_sync_outside_the_home_is_refused() {
    let home =
        TestHome::with_config("[[file_sync]]\nhost = \"/etc/hostname\"\nguest = \"/root/h\"\n");
    let (code, _, err) = banger(&home, &["config", "show"]);
    assert_ne!(code, 0);
    assert!(err.contains("outside the owner's home"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let home =
        TestHome::with_config("[[file_sync]]\nhost = \"~/etc/hostname\"\nguest = \"/root/h\"\n");
    std::os::unix::fs::symlink("/etc", home.path().join("etc")).unwrap();
    let (code, _, err) = banger(&home, &["vm", "ls"]);
    assert_ne!(code, 0);
    assert!(err.contains("leads to /etc/hostname, outside"), "{err}");
}

#[test]
fn workspace_bad_input_is_one_line_and_makes_no_vm() {
    let home = TestHome::new();
    let plain = home.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let (code, _, err) = banger(
        &home,
        &[
            "vm",
            "run",
            "--workspace",
            plain.to_str().unwrap(),
            "x",
            "--",
            "true",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("is not inside a git repository"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) = banger(&home, &["workspace", "sync", "x", plain.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("is not inside a git repository"), "{err}");
    assert_eq!(home.json(&["vm", "ls", "--json"]), serde_json::json!([]));
}

/// Busybox has neither git nor tar: the sync says so instead of failing
/// somewhere inside a script.
#[test]
fn workspace_into_an_image_without_git_is_a_clear_error() {
    let Some(home) = boot_home() else { return };
    let repo = home.path().join("r");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("f"), "x").unwrap();
    git(&repo, &["add", "f"]);
    git(&repo, &["commit", "-qm", "c"]);
    let (code, _, err) = banger(
        &home,
        &[
            "vm",
            "run",
            "--rm",
            "--memory",
            "256M",
            "--workspace",
            repo.to_str().unwrap(),
            "busybox",
            "--",
            "true",
        ],
    );
    assert_ne!(code, 0);
    // Stage lines come first on a non-TTY stderr; the error is the last one.
    let last = err.lines().last().unwrap_or("");
    assert_eq!(
        last, "banger: the guest has no git; use an image with git installed",
        "{err}"
    );
}

#[test]
fn workspace_sync_export_and_file_sync_in_a_debian_guest() {
    let (Some(deb), Some(tar), Some(_)) = (kernel_deb(), debian_rootfs_tar(), agent_bin()) else {
        return;
    };
    require_tool("git", "git");
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    let home = TestHome::with_config(
        "[[file_sync]]\nhost = \"~/dotfiles/gitconfig\"\nguest = \"/root/.config/synced/gitconfig\"\nmode = \"0600\"\n",
    );
    std::fs::create_dir(home.path().join("dotfiles")).unwrap();
    std::fs::write(
        home.path().join("dotfiles/gitconfig"),
        "[core]\n\tpager = cat\n",
    )
    .unwrap();
    home.ok(&["kernel", "import", "--deb", deb.to_str().unwrap()]);
    home.ok(&["image", "import", tar.to_str().unwrap(), "--name", "debian"]);

    // A repo: a commit, a tracked edit, a staged new file, an untracked
    // file and an ignored one.
    let repo = home.path().join("proj");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    std::fs::write(repo.join(".gitignore"), "*.log\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "first commit"]);
    std::fs::write(repo.join("README"), "hello\nunstaged edit\n").unwrap();
    std::fs::write(repo.join("staged.txt"), "staged\n").unwrap();
    git(&repo, &["add", "staged.txt"]);
    std::fs::write(repo.join("notes.txt"), "untracked\n").unwrap();
    std::fs::write(repo.join("build.log"), "ignored\n").unwrap();
    let host_last = git(&repo, &["log", "-1", "--format=%H %s"]);

    // vm run --workspace: the command runs in the guest copy.
    let (code, out, err) = banger(
        &home,
        &[
            "vm",
            "run",
            "--workspace",
            repo.to_str().unwrap(),
            "--name",
            "ws",
            "debian",
            "--",
            "sh",
            "-c",
            "git log -1 --format='%H %s'; pwd; cat notes.txt staged.txt README; test -e build.log || echo no-ignored; git branch --show-current; stat -c %a /root/.config/synced/gitconfig; cat /root/.config/synced/gitconfig",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], host_last,
        "git log -1 in the guest is the host's: {out}"
    );
    assert_eq!(lines[1], "/root/proj");
    assert_eq!(
        &lines[2..6],
        ["untracked", "staged", "hello", "unstaged edit"]
    );
    assert_eq!(
        lines[6], "no-ignored",
        "ignored files stay on the host: {out}"
    );
    assert_eq!(lines[7], "main");
    assert_eq!(lines[8], "600", "file_sync mode: {out}");
    assert!(out.contains("pager = cat"), "file_sync content: {out}");

    // The guest commits and edits.
    let before = host_state(&repo);
    home.ok(&[
        "vm", "exec", "ws", "--", "sh", "-c",
        "cd /root/proj && git add -A && git commit -qm 'guest commit' && echo guest-edit >> README && echo new > guest-new.txt",
    ]);
    let out = home.ok(&["workspace", "export", "ws", repo.to_str().unwrap()]);
    assert!(out.starts_with("banger/ws -> "), "{out}");
    assert_eq!(
        host_state(&repo),
        before,
        "host HEAD, branch and files untouched"
    );
    let log = git(&repo, &["log", "--format=%s", "banger/ws"]);
    let subjects: Vec<&str> = log.lines().collect();
    assert_eq!(subjects[0], "banger: uncommitted changes in VM ws", "{log}");
    assert_eq!(&subjects[1..], ["guest commit", "first commit"], "{log}");
    let readme = git(&repo, &["show", "banger/ws:README"]);
    assert_eq!(readme, "hello\nunstaged edit\nguest-edit");
    assert_eq!(git(&repo, &["show", "banger/ws:guest-new.txt"]), "new");
    assert_eq!(git(&repo, &["show", "banger/ws:notes.txt"]), "untracked");
    assert!(
        git(&repo, &["ls-tree", "-r", "--name-only", "banger/ws"])
            .lines()
            .all(|l| l != "build.log")
    );

    // The branch moves on the host: a second export is refused, --force wins.
    git(&repo, &["branch", "-f", "banger/ws", "main"]);
    let err = home.fails(&["workspace", "export", "ws", repo.to_str().unwrap()]);
    assert!(err.contains("moved since the last export"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        git(&repo, &["rev-parse", "banger/ws"]),
        git(&repo, &["rev-parse", "main"])
    );
    home.ok(&[
        "workspace",
        "export",
        "ws",
        repo.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%s", "banger/ws"]),
        "banger: uncommitted changes in VM ws"
    );

    // A sync while the guest has commits the host lacks is refused...
    let err = home.fails(&["workspace", "sync", "ws", repo.to_str().unwrap()]);
    assert!(err.contains("commits the host lacks"), "{err}");
    // ...and fast-forwards once the host has them.
    git(&repo, &["stash", "-q", "-u"]);
    git(&repo, &["merge", "-q", "--ff-only", "banger/ws"]);
    home.ok(&[
        "vm",
        "exec",
        "ws",
        "--",
        "sh",
        "-c",
        "cd /root/proj && git reset -q --hard && git clean -qfd",
    ]);
    home.ok(&["workspace", "sync", "ws", repo.to_str().unwrap()]);
    let out = home.ok(&[
        "vm",
        "exec",
        "ws",
        "-w",
        "/root/proj",
        "--",
        "git",
        "log",
        "-1",
        "--format=%H",
    ]);
    assert_eq!(out.trim(), git(&repo, &["rev-parse", "HEAD"]));
    home.ok(&["vm", "rm", "-f", "ws"]);
}

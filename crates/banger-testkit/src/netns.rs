//! Network namespaces owned by a test: created with a test-unique name,
//! entered per thread, deleted on drop. Everything a network test does
//! (links, rules, servers, traffic) happens inside such namespaces, never
//! in the host's own.
//!
//! A namespace is entered by one thread at a time ([`NetNs::in_thread`]):
//! sockets, netlink connections and `/proc/sys/net` follow the namespace
//! of the thread that opened them, and child processes inherit it, so code
//! under test needs no namespace awareness. A socket opened inside keeps
//! its namespace when handed to another thread.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`/run/netns/<name>`), removed on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A fresh namespace with `lo` up. `tag` says what it plays in the test.
    pub fn new(tag: &str) -> NetNs {
        crate::require_tool("ip", "iproute2");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("bgtest-{tag}-{}-{n}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {} (network tests need root)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> ARGS`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out
    }

    /// A command that runs `program` inside the namespace (with its own
    /// /sys, as `ip netns exec` remounts it).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run `f` on a new thread that has entered this namespace; the
    /// calling thread stays where it is.
    pub fn in_thread<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> R {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                enter(&path);
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }

    /// Like [`NetNs::in_thread`] but detached, for servers that outlive
    /// the call.
    pub fn spawn<R: Send + 'static, F: FnOnce() -> R + Send + 'static>(
        &self,
        f: F,
    ) -> std::thread::JoinHandle<R> {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Join `self` and `other` by a veth pair: `here` in this namespace,
    /// `there` in `other`, both up.
    pub fn veth(&self, here: &str, other: &NetNs, there: &str) {
        self.ip(&[
            "link",
            "add",
            here,
            "type",
            "veth",
            "peer",
            "name",
            there,
            "netns",
            &other.name,
        ]);
        self.ip(&["link", "set", here, "up"]);
        other.ip(&["link", "set", there, "up"]);
    }
}

fn enter(path: &std::path::Path) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    setns(&f, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the name frees the namespace once the last socket or
        // process in it is gone; links and nft tables inside go with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

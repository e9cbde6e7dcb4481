//! `vm pause` / `vm resume` on a real QEMU boot: a process in the guest
//! stops counting while the VM is paused and goes on from where it was
//! after resume; paused shows in `vm ls`/`vm show`, survives a daemon
//! restart (it lives in handles.json), refuses execs, and a paused VM
//! still stops.

use std::time::{Duration, Instant};

use banger_testkit::{TestHome, boot_home};

/// The counter the guest loop writes, read through an exec.
fn count(home: &TestHome) -> u64 {
    let out = home.ok(&["vm", "exec", "bb", "--", "cat", "/root/count"]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("count {out:?}"))
}

fn state(home: &TestHome) -> String {
    let vms = home.json(&["vm", "ls", "--json"]);
    let paused = vms[0]["paused"].as_bool().expect("paused field");
    let show = home.ok(&["vm", "show", "bb"]);
    let label = show
        .lines()
        .find_map(|l| l.trim().strip_prefix("state"))
        .expect("state line")
        .trim_start_matches([':', ' '])
        .to_string();
    assert_eq!(
        paused,
        label == "paused",
        "ls --json and show agree: {show}"
    );
    let table = home.ok(&["vm", "ls"]);
    assert!(table.contains(&label), "{table}");
    label
}

#[test]
fn pause_freezes_a_counting_process_and_resume_continues_it() {
    let Some(home) = boot_home() else { return };
    home.ok(&[
        "vm", "create", "busybox", "--name", "bb", "--cpus", "1", "--memory", "256M",
    ]);
    let err = home.fails(&["vm", "pause", "bb"]);
    assert!(err.contains("not running"), "{err}");
    home.ok(&["vm", "start", "bb"]);

    // Detached from the exec's session so it outlives the exec (the image
    // has no `setsid` link, busybox has the applet).
    home.ok(&[
        "vm",
        "exec",
        "bb",
        "--",
        "sh",
        "-c",
        "busybox setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /root/count; sleep 0.2; done' \
         </dev/null >/dev/null 2>&1 &",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while home
        .banger()
        .args(["vm", "exec", "bb", "--", "sh", "-c", "test -s /root/count"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the counter never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(state(&home), "running");
    let err = home.fails(&["vm", "resume", "bb"]);
    assert!(err.contains("not paused"), "{err}");

    let before = count(&home);
    assert!(before >= 1, "{before}");
    home.ok(&["vm", "pause", "bb"]);
    assert_eq!(state(&home), "paused");
    let err = home.fails(&["vm", "exec", "bb", "--", "true"]);
    assert!(
        err.contains("is paused") && err.contains("banger vm resume bb"),
        "{err}"
    );
    let err = home.fails(&["vm", "pause", "bb"]);
    assert!(err.contains("already paused"), "{err}");

    // Paused is in handles.json: a restarted daemon still knows it.
    home.kill_daemon();
    assert_eq!(state(&home), "paused");

    // 3 s paused is 15 ticks of the loop if it ran; it must not have.
    std::thread::sleep(Duration::from_secs(3));
    home.ok(&["vm", "resume", "bb"]);
    assert_eq!(state(&home), "running");
    let after = count(&home);
    assert!(
        after >= before && after - before < 8,
        "counted while paused: {before} -> {after}"
    );
    // The same process goes on counting after the resume.
    std::thread::sleep(Duration::from_secs(2));
    let later = count(&home);
    assert!(
        later > after,
        "stopped counting after resume: {after} -> {later}"
    );

    // A paused VM still stops (resumed first, so cleanly).
    home.ok(&["vm", "pause", "bb"]);
    home.ok(&["vm", "stop", "bb", "--timeout", "30"]);
    assert_eq!(state(&home), "stopped");
    let err = home.fails(&["vm", "resume", "bb"]);
    assert!(err.contains("not running"), "{err}");
}

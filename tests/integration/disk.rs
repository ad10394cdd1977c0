//! The disk fill against the real binary: on a size-limited tmpfs (a private
//! mount namespace made with `unshare -m`, so nothing leaks onto the host),
//! `du` must agree with what the service says it wrote, a full disk must be a
//! 507 that leaves the process, its probes and its crash marker working, and
//! every way of stopping must leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Service, command, describe, files, in_tmpfs, output_within, poll, request, temp_dir};

const MIB: u64 = 1 << 20;

/// The binary with STATE_DIR on a fresh `size`-limited tmpfs (see
/// `harness::in_tmpfs`), and that tmpfs as seen from here.
fn on_tmpfs(size: &str, env: &[(&str, &str)]) -> (Service, PathBuf) {
    let state = temp_dir("tmpfs");
    let svc = Service::spawn(in_tmpfs(size, &state, &command(&state, env)));
    // The tmpfs as the service sees it, through its mount namespace.
    let seen = PathBuf::from(format!("/proc/{}/root", svc.pid())).join(state.strip_prefix("/").unwrap());
    (svc, seen)
}

/// Bytes allocated under `dir`, as `du` counts them (blocks, not length).
fn du(dir: &Path) -> u64 {
    let mut cmd = Command::new("du");
    cmd.args(["-s", "--block-size=1"]).arg(dir);
    let out = output_within(cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "du {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du prints a number")
}

#[test]
fn on_a_32m_tmpfs_du_agrees_a_full_disk_is_507_and_the_crash_marker_still_works() {
    let (svc, state) = on_tmpfs("32m", &[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let fill = state.join("fill");
    // A fresh tmpfs, but for the healing figures (one small file).
    let fresh = du(&state);
    assert!(fresh <= 8 << 10, "{fresh} bytes: {:?}", files(&state));

    // 16 MiB: du agrees within 5 %.
    let r = svc.post("/load/disk?mb=16");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["written_bytes"], 16 * MIB);
    let used = du(&fill);
    assert!(
        used.abs_diff(16 * MIB) * 20 <= 16 * MIB,
        "du says {used} bytes for a 16 MiB fill"
    );
    let chaos = svc.get("/chaos").json();
    let listed = chaos["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fault"] == "disk")
        .cloned();
    let listed = listed.expect("disk listed");
    assert_eq!(listed["written_bytes"], 16 * MIB, "{chaos}");
    // Written, it stays until removed, holding its slot: no end of its own.
    assert_eq!(listed["ends_at_unix_ms"], serde_json::Value::Null, "{chaos}");
    assert_eq!(chaos["active"], 1, "{chaos}");
    assert_eq!(
        svc.metric("chaos_disk_fill_bytes{state=\"written\"}"),
        (16 * MIB) as f64
    );
    assert_eq!(svc.metric("chaos_fault_active{fault=\"disk\"}"), 1.0);

    // DELETE: du shows 0.
    let r = request(svc.addr, "DELETE", "/load/disk", &[], "");
    assert_eq!((r.status, r.json()["removed_bytes"].as_u64()), (200, Some(16 * MIB)));
    assert_eq!(du(&fill), 0, "after DELETE: {:?}", files(&fill));
    assert_eq!(svc.metric("chaos_fault_active{fault=\"disk\"}"), 0.0);

    // 64 MiB on 32: 507 naming what was written; the partial file is gone.
    let r = svc.post("/load/disk?mb=64");
    assert_eq!(r.status, 507, "{}", r.body);
    let body = r.json();
    let written = body["written_bytes"].as_u64().unwrap();
    assert!((24 * MIB..=32 * MIB).contains(&written), "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "after writing {} MiB ({written} bytes) of 64 MiB",
            written >> 20
        )) && error.contains("ENOSPC")
            && error.contains("removed"),
        "{error}"
    );
    assert_eq!(body["reason"], "no_space");
    assert_eq!(files(&fill), Vec::<String>::new());
    assert_eq!(du(&state), fresh);
    assert_eq!(svc.get("/health").status, 200);
    assert_eq!(svc.get("/ready").status, 200);
    assert_eq!(svc.metric("chaos_disk_fill_ended_total{reason=\"no_space\"}"), 1.0);
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"disk\",outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(svc.metric("chaos_disk_fill_bytes{state=\"written\"}"), 0.0);
    let ended = svc.get("/chaos").json();
    assert_eq!(ended["ended"][0]["reason"], "no_space", "{ended}");
    assert_eq!(ended["active"], 0, "{ended}");

    // The crash marker can still be written on that disk.
    assert_eq!(svc.post("/crash?mode=exit&code=7").status, 202);
    let marker = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        std::fs::read_to_string(state.join("last-crash.json")).ok()
    });
    let marker = marker.unwrap_or_else(|| panic!("no crash marker; files: {:?}\n{}", files(&state), svc.stderr()));
    assert!(marker.contains("\"mode\":\"exit\""), "{marker}");
    assert!(!svc.stderr().contains("crash marker not written"), "{}", svc.stderr());
}

#[test]
fn a_ramp_that_runs_out_of_space_ends_and_says_why_and_keep_true_keeps_the_file() {
    let (svc, state) = on_tmpfs("16m", &[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let fill = state.join("fill");
    let r = svc.post("/load/disk?mb=32&ramp=2");
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["status"], "filling");
    // The client has its 202; the fault must end on its own and say why.
    let ended = poll(Duration::from_secs(15), Duration::from_millis(100), || {
        let chaos = svc.get("/chaos").json();
        (chaos["ended"][0]["reason"] == "no_space").then_some(chaos)
    })
    .unwrap_or_else(|| panic!("the ramp never reported ENOSPC: {}", svc.get("/chaos").body));
    assert_eq!(ended["active"], 0, "{ended}");
    assert!(
        ended["ended"][0]["written_bytes"].as_u64().unwrap() >= 8 * MIB,
        "{ended}"
    );
    assert_eq!(svc.metric("chaos_disk_fill_ended_total{reason=\"no_space\"}"), 1.0);
    assert_eq!(svc.metric("chaos_fault_active{fault=\"disk\"}"), 0.0);
    let finished: Vec<_> = svc
        .events()
        .into_iter()
        .filter(|e| e["event"] == "CHAOS_FINISHED" && e["action"] == "disk")
        .collect();
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0]["reason"], "no_space");
    assert_eq!(du(&fill), 0);

    // keep=true: the full file stays, listed, until DELETE.
    let r = svc.post("/load/disk?mb=32&keep=true");
    assert_eq!(r.status, 507, "{}", r.body);
    assert_eq!(r.json()["kept"], true);
    assert!(du(&fill) >= 14 * MIB, "kept: {}", du(&fill));
    let chaos = svc.get("/chaos").json();
    assert_eq!(chaos["faults"][0]["fault"], "disk", "{chaos}");
    assert_eq!(svc.get("/health").status, 200);
    assert_eq!(request(svc.addr, "DELETE", "/load/disk", &[], "").status, 200);
    assert_eq!(du(&fill), 0);
}

#[test]
fn stopping_a_ramp_waits_for_the_writer_and_leaves_nothing() {
    let state = temp_dir("disk-stop");
    let svc = Service::start_in(&state, &[("CHAOS_COOLDOWN_SECONDS", "0")]);
    let fill = state.join("fill");
    for stop in ["DELETE /load/disk", "POST /chaos/stop"] {
        assert_eq!(svc.post("/load/disk?mb=200&ramp=100").status, 202);
        poll(Duration::from_secs(5), Duration::from_millis(20), || {
            (svc.metric("chaos_disk_fill_bytes{state=\"written\"}") > 0.0).then_some(())
        })
        .expect("the ramp writes");
        assert_eq!(
            svc.metric("chaos_disk_fill_bytes{state=\"target\"}"),
            (200 * MIB) as f64
        );
        let (method, path) = stop.split_once(' ').unwrap();
        let t = Instant::now();
        let r = request(svc.addr, method, path, &[], "");
        assert_eq!(r.status, 200, "{stop}: {}", r.body);
        assert!(t.elapsed() < Duration::from_secs(3), "{stop} took {:?}", t.elapsed());
        // Returned only once the writer stopped: nothing appears later.
        assert_eq!(files(&fill), Vec::<String>::new(), "{stop}");
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(files(&fill), Vec::<String>::new(), "{stop}: the writer went on");
        assert_eq!(svc.metric("chaos_disk_fill_bytes{state=\"written\"}"), 0.0);
        assert_eq!(svc.get("/chaos").json()["active"], 0);
    }
    assert_eq!(svc.metric("chaos_disk_fill_ended_total{reason=\"removed\"}"), 2.0);
}

#[test]
fn a_fill_left_by_an_earlier_run_is_removed_at_start_up_and_sigterm_removes_ours() {
    let state = temp_dir("disk-leftover");
    std::fs::create_dir_all(state.join("fill")).unwrap();
    std::fs::write(state.join("fill/chaos-disk-fill.bin"), vec![7u8; 3 << 20]).unwrap();
    std::fs::write(state.join("fill/not-ours.txt"), "stay").unwrap();
    let mut svc = Service::start_in(&state, &[]);
    assert_eq!(files(&state.join("fill")), ["not-ours.txt"]);
    assert!(
        svc.stderr().contains("removed a disk fill left by an earlier run") && svc.stderr().contains("(3 MiB)"),
        "{}",
        svc.stderr()
    );
    assert_eq!(svc.post("/load/disk?mb=2").status, 200);
    assert_eq!(files(&state.join("fill")).len(), 2);
    svc.signal(libc::SIGTERM);
    let status = svc.wait_exit(Duration::from_secs(5)).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert_eq!(files(&state.join("fill")), ["not-ours.txt"]);
}

#[test]
fn token_kill_switch_guardrails_and_a_bad_dir_apply_to_the_disk_fill() {
    let auth = [("Authorization", "Bearer disk-token")];
    let svc = Service::start(&[("CHAOS_TOKEN", "disk-token")]);
    assert_eq!(svc.post("/load/disk?mb=1").status, 401);
    assert_eq!(request(svc.addr, "DELETE", "/load/disk", &[], "").status, 401);
    assert_eq!(request(svc.addr, "POST", "/load/disk?mb=1", &auth, "").status, 200);
    // One fill at a time, then the cooldown (60 s by default).
    assert_eq!(request(svc.addr, "POST", "/load/disk?mb=1", &auth, "").status, 409);
    assert_eq!(request(svc.addr, "DELETE", "/load/disk", &auth, "").status, 200);
    let r = request(svc.addr, "POST", "/load/disk?mb=1", &auth, "");
    assert_eq!(r.status, 429, "{}", r.body);
    let r = request(svc.addr, "POST", "/load/disk?mb=0", &auth, "");
    assert_eq!((r.status, r.json()["parameter"].as_str()), (400, Some("mb")));

    let off = Service::start(&[("CHAOS_ENABLED", "false")]);
    assert_eq!(off.post("/load/disk?mb=1").status, 403);
    assert_eq!(request(off.addr, "DELETE", "/load/disk", &[], "").status, 200);

    // A directory that cannot be made: the service runs, the fill says why.
    let bad = Service::start(&[("DISK_FILL_DIR", "/proc/chaos-backend-cannot/fill")]);
    assert_eq!(bad.get("/health").status, 200);
    let r = bad.post("/load/disk?mb=1");
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("/proc/chaos-backend-cannot/fill")
    );
    // Set but empty: exit 2 naming it, before binding.
    let out = output_within(
        command(&temp_dir("disk-empty"), &[("DISK_FILL_DIR", "")]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid DISK_FILL_DIR \"\""));
}

/// A fill that stays holds its guardrail slot until it is removed, as a
/// leak does: once a ramp has written everything it is still listed (with
/// no end of its own), counted by the guardrail and by chaos_fault_active;
/// DELETE frees the slot.
#[test]
fn a_written_fill_keeps_its_slot_until_removed() {
    let state = temp_dir("disk-slot");
    let svc = Service::start_in(&state, &[("CHAOS_COOLDOWN_SECONDS", "0")]);
    assert_eq!(svc.post("/load/disk?mb=2&ramp=1").status, 202);
    let held = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let chaos = svc.get("/chaos").json();
        (chaos["faults"][0]["writing"] == false).then_some(chaos)
    })
    .expect("the ramp finishes writing");
    let fill = &held["faults"][0];
    assert_eq!(
        (
            fill["fault"].as_str(),
            fill["written_bytes"].as_u64(),
            held["active"].as_u64()
        ),
        (Some("disk"), Some(2 * MIB), Some(1)),
        "{held}"
    );
    assert_eq!(fill["ends_at_unix_ms"], serde_json::Value::Null, "{held}");
    assert_eq!(svc.metric("chaos_fault_active{fault=\"disk\"}"), 1.0);
    let r = svc.post("/load/cpu?duration=1");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        r.body.contains("a disk fill holds its slot until DELETE /load/disk"),
        "{}",
        r.body
    );
    let r = svc.post("/load/disk?mb=1");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("already held (2 MiB written)"), "{}", r.body);
    let r = request(svc.addr, "DELETE", "/load/disk", &[], "");
    assert_eq!(r.json()["removed_bytes"].as_u64(), Some(2 * MIB), "{}", r.body);
    assert_eq!(files(&state.join("fill")), Vec::<String>::new());
    assert_eq!(svc.metric("chaos_fault_active{fault=\"disk\"}"), 0.0);
    assert_eq!(svc.post("/load/cpu?duration=1").status, 202, "the slot is free");
}

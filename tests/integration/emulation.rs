//! The arm64 smoke subset: scripts/test.sh runs a few tests of the other
//! modules again with `CHAOS_BIN` (the aarch64-unknown-linux-musl build) and
//! `CHAOS_RUNNER=qemu-aarch64-static`. This test, part of that subset,
//! proves the process that answers really is the runner running that
//! binary, so the subset cannot quietly test the host build instead.

use crate::harness::{Service, bin, emulated, runner};

#[test]
fn the_service_under_test_is_chaos_bin_under_chaos_runner() {
    let svc = Service::start(&[]);
    assert_eq!(svc.get("/health").status, 200);
    let exe = std::fs::read_link(format!("/proc/{}/exe", svc.pid())).expect("exe link");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", svc.pid())).expect("cmdline");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if emulated() {
        let runner = runner();
        let name = |p: &str| std::path::Path::new(p).file_name().map(|n| n.to_os_string());
        assert_eq!(exe.file_name().map(|n| n.to_os_string()), name(&runner[0]), "{exe:?}");
        assert_eq!(args.last().map(String::as_str), bin().to_str(), "{args:?}");
        // The binary is another architecture than the host's: e_machine.
        let elf = std::fs::read(bin()).expect("read CHAOS_BIN");
        let machine = u16::from_le_bytes([elf[18], elf[19]]);
        let host = if cfg!(target_arch = "x86_64") { 62 } else { 183 };
        assert_ne!(machine, host, "CHAOS_BIN is the host's architecture");
        eprintln!("served by {exe:?} running {args:?} (e_machine {machine})");
    } else {
        assert_eq!(exe, std::fs::canonicalize(bin()).unwrap());
    }
}

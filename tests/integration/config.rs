//! Configuration as a user meets it: arguments answered whatever the
//! environment holds, misspelt variable names refused before anything binds,
//! and a real pod's or container's environment never refused.

use std::time::Duration;

use crate::harness::{Service, command, describe, output_within, temp_dir};

fn run_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = command(&temp_dir("config"), env);
    cmd.args(args);
    output_within(cmd, Duration::from_secs(10))
}

#[test]
fn help_and_version_answer_whatever_the_environment_holds() {
    for env in [
        &[("PORT", "abc")][..],
        &[("CHAOS_TOKEN", "a"), ("CHAOS_TOKEN_FILE", "/b")][..],
        &[("CHAOS_TOKENFILE", "/run/token")][..],
    ] {
        for (args, needle) in [
            (&["--help"][..], "usage: chaos-backend"),
            (&["-h"][..], "usage: chaos-backend"),
            (&["--version"][..], concat!("chaos-backend ", env!("CARGO_PKG_VERSION"))),
        ] {
            let out = run_with(args, env);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{args:?} with {env:?}: {}; stderr: {}",
                describe(out.status),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains(needle), "{args:?} with {env:?}: {stdout}");
        }
    }
    // The health probe still needs the configuration, and says why it fails
    // with the probe's own exit code (Docker reserves 2).
    let out = run_with(&["healthcheck"], &[("PORT", "abc")]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(out.status));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid PORT \"abc\""));
    // Bad configuration without arguments is still exit 2.
    let out = run_with(&[], &[("PORT", "abc")]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(out.status));
}

//! Configuration as a user meets it: arguments answered whatever the
//! environment holds, `--help` held to the parser, misspelt variable names
//! refused before anything binds, and a real pod's or container's
//! environment never refused.

use std::time::Duration;

use crate::harness::{Service, command, describe, output_within, temp_dir, unshare, wrapped};

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

/// One variable as `--help` lists it: `NAME DEFAULT ACCEPTS; MEANING`.
#[derive(Debug)]
struct Listed {
    name: String,
    default: String,
    accepts: String,
}

/// The variables `--help` lists, one a line after its header line.
fn listed_variables() -> Vec<Listed> {
    let out = run_with(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(out.status));
    let text = String::from_utf8(out.stdout).expect("--help is UTF-8");
    let header = "environment variables (name, default, accepted values; meaning):";
    assert!(text.contains(header), "{text}");
    text.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        // A blank line, then the signals.
        .take_while(|l| !l.is_empty())
        .map(|line| {
            let (name, rest) = line.split_once(' ').unwrap_or_else(|| panic!("no default: {line:?}"));
            let (default, rest) = rest
                .trim_start()
                .split_once(' ')
                .unwrap_or_else(|| panic!("nothing accepted: {line:?}"));
            let (accepts, meaning) = rest
                .trim_start()
                .split_once("; ")
                .unwrap_or_else(|| panic!("no meaning: {line:?}"));
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{line:?}"
            );
            assert!(!meaning.trim().is_empty(), "{line:?}");
            Listed {
                name: name.to_string(),
                default: default.to_string(),
                accepts: accepts.to_string(),
            }
        })
        .collect()
}

/// The `A` and `B` of "... from A to B" in what a variable accepts.
fn bounds(accepts: &str) -> Option<(u64, u64)> {
    let number = |s: &str| -> Option<u64> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let (_, range) = accepts.split_once(" from ")?;
    let (min, max) = range.split_once(" to ")?;
    Some((number(min)?, number(max)?))
}

/// The values `--help` says a variable accepts (its default, its bounds)
/// and those just outside (one past each bound, a word that is not a
/// boolean, or an empty value).
fn probes(v: &Listed) -> (Vec<String>, Vec<String>) {
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    // "unset" and "$STATE_DIR/fill" describe an unset variable: not values.
    if v.default != "unset" && !v.default.starts_with('$') {
        accepted.push(v.default.clone());
    }
    if let Some((min, max)) = bounds(&v.accepts) {
        accepted.extend([min.to_string(), max.to_string()]);
        if min > 0 {
            refused.push((min - 1).to_string());
        }
        refused.push((max + 1).to_string());
    } else if v.accepts.starts_with("true or false") {
        accepted.extend(["true".to_string(), "false".to_string()]);
        refused.push("yes".to_string());
    }
    if !v.accepts.contains("never refused") {
        refused.push(String::new());
    }
    (accepted, refused)
}

/// `--help` tells the parser's truth: every variable it lists is accepted
/// at its default and at its bounds, and refused just outside them with
/// exit 2 naming the variable and the value; and every name it lists is
/// one the misspelling check knows. An accepted value is proven by the
/// service starting with it, in a network namespace of its own, so that
/// `PORT=8080` or `BIND_ADDRESS=0.0.0.0` takes nothing from the host.
#[test]
fn help_lists_what_the_parser_accepts_and_refuses() {
    let listed = listed_variables();
    assert!(listed.len() >= 28, "{listed:#?}");
    for name in [
        "CPU_LOAD_DURATION",
        "PORT",
        "HTTP_MAX_CONNECTIONS",
        "CHAOS_TOKEN_FILE",
        "RUST_LOG",
    ] {
        assert!(listed.iter().any(|v| v.name == name), "--help lacks {name}");
    }
    let mut starts = 0;
    for v in &listed {
        let (accepted, refused) = probes(v);
        for value in &accepted {
            let inner = command(&temp_dir("help"), &[(v.name.as_str(), value.as_str())]);
            let svc = Service::spawn(wrapped(unshare(&["--net", "--"]), &inner));
            drop(svc);
            starts += 1;
        }
        for value in &refused {
            let out = run_with(&[], &[(v.name.as_str(), value.as_str())]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{}={value:?}: {}; {stderr}",
                v.name,
                describe(out.status)
            );
            assert!(
                stderr.contains(&format!("invalid {} {value:?}: expected ", v.name)),
                "{}={value:?}: {stderr}",
                v.name
            );
        }
        // The misspelling check knows the name: in another case it is
        // refused, naming it.
        let other_case = v.name.to_lowercase();
        let out = run_with(&[], &[(other_case.as_str(), "1")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{other_case}: {stderr}");
        assert!(
            stderr.contains(&format!("unknown variable {other_case}: did you mean {}?", v.name)),
            "{other_case}: {stderr}"
        );
    }
    assert!(starts >= 60, "only {starts} accepted values were tried");
}

/// A misspelt name would be ignored in silence: `CHAOS_TOKENFILE` would
/// leave chaos open to anyone. The service refuses to start, before it
/// binds, naming the variable and the one meant, and never echoing the
/// value.
#[test]
fn misspelt_variable_is_refused_with_exit_2_naming_the_name_meant() {
    for (typo, meant) in [
        ("CHAOS_TOKENFILE", "CHAOS_TOKEN_FILE"),
        ("CHAOS_TOKN", "CHAOS_TOKEN"),
        ("chaos_token", "CHAOS_TOKEN"),
        ("MAX_MEMORY_MB_REDY", "MAX_MEMORY_MB_READY"),
        ("CPU_LOAD_DURATON", "CPU_LOAD_DURATION"),
        ("CPU_LAOD_DURATON", "CPU_LOAD_DURATION"),
        ("WORKER", "WORKERS"),
        ("port", "PORT"),
    ] {
        let out = run_with(&[], &[(typo, "s3cret-value")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{typo}: {}; {stderr}", describe(out.status));
        assert!(
            stderr.contains(&format!("unknown variable {typo}: did you mean {meant}?")),
            "{typo}: {stderr}"
        );
        assert!(
            !stderr.contains("s3cret-value"),
            "{typo}: the value is echoed: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{typo}: it served: {stderr}");
    }
}

/// `DISK_FILL_DIR` is a known name (though its default comes from
/// `STATE_DIR`): a misspelt `DISK_FIL_DIR` would
/// otherwise leave the fill in `STATE_DIR/fill` without a word. The right
/// name still starts the service.
#[test]
fn misspelt_disk_fill_dir_is_refused_naming_disk_fill_dir() {
    let fill = temp_dir("config-fill");
    let dir = fill.to_str().unwrap();
    for typo in ["DISK_FIL_DIR", "DISK_FILL_DIRS", "disk_fill_dir", "DSIK_FILL_DIR"] {
        let out = run_with(&[], &[(typo, dir)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{typo}: {}; {stderr}", describe(out.status));
        assert!(
            stderr.contains(&format!("unknown variable {typo}: did you mean DISK_FILL_DIR?")),
            "{typo}: {stderr}"
        );
        assert!(!stderr.contains(dir), "{typo}: the value is echoed: {stderr}");
    }
    let svc = Service::start(&[("DISK_FILL_DIR", dir)]);
    assert_eq!(svc.get("/health").status, 200);
}

/// What Kubernetes (with service links for this Service and others),
/// Docker, podman and a login shell put in the environment: the service
/// starts with all of it.
#[test]
fn a_real_pod_or_container_environment_is_never_refused() {
    let mut env: Vec<(String, String)> = [
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
        ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
        ("KUBERNETES_PORT_443_TCP_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ("HOME", "/"),
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("TERM", "xterm"),
        ("container", "podman"),
        ("HOST", "0.0.0.0"),
        ("USER", "root"),
        ("LOGNAME", "root"),
        ("SHELL", "/bin/bash"),
        ("PWD", "/"),
        ("OLDPWD", "/root"),
        ("SHLVL", "1"),
        ("_", "/usr/bin/env"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C.UTF-8"),
        ("LC_CTYPE", "C.UTF-8"),
        ("TZ", "UTC"),
        ("RUST_BACKTRACE", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // A Service named chaos-backend (as manifests/ creates) and others,
    // some with names near this service's variables.
    for (service, port) in [
        ("CHAOS_BACKEND", 8080),
        ("PROMETHEUS", 9090),
        ("REDIS", 6379),
        ("P", 80),
        ("WEB", 80),
        ("PORT", 80),
        ("WORKERS", 80),
        ("STATE", 80),
    ] {
        let ip = "10.96.12.34";
        env.push((format!("{service}_SERVICE_HOST"), ip.into()));
        env.push((format!("{service}_SERVICE_PORT"), port.to_string()));
        env.push((format!("{service}_SERVICE_PORT_HTTP"), port.to_string()));
        env.push((format!("{service}_PORT"), format!("tcp://{ip}:{port}")));
        env.push((format!("{service}_PORT_{port}_TCP"), format!("tcp://{ip}:{port}")));
        env.push((format!("{service}_PORT_{port}_TCP_PROTO"), "tcp".into()));
        env.push((format!("{service}_PORT_{port}_TCP_PORT"), port.to_string()));
        env.push((format!("{service}_PORT_{port}_TCP_ADDR"), ip.into()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let svc = Service::start(&env);
    assert_eq!(svc.get("/health").status, 200);
}

/// A start-up log line with its figures blanked: the timestamp dropped,
/// each number (whole or decimal) written `N`.
fn shape(line: &str) -> String {
    let text = line.split_once("  ").map_or(line, |(_, rest)| rest);
    let mut out = String::new();
    let mut in_number = false;
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let decimal_point = *c == '.' && in_number && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_ascii_digit() || decimal_point {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(*c);
        }
    }
    out
}

/// The lines of `text` from the first up to the `POD_STARTED` event, as the
/// documented example and the image's log both begin: (text lines, the
/// keys of `POD_STARTED`).
fn start_up_lines(text: &str) -> (Vec<&str>, Vec<String>) {
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Ok(serde_json::Value::Object(event)) = serde_json::from_str(line)
            && event.get("event").and_then(|e| e.as_str()) == Some("POD_STARTED")
        {
            return (lines, event.keys().cloned().collect());
        }
        if !line.starts_with('{') {
            lines.push(line);
        }
    }
    panic!("no POD_STARTED event in:\n{text}")
}

/// Where the start-up log of the image and the doc's example differ, line
/// shape by line shape both ways, and the keys of `POD_STARTED`.
fn start_up_log_differences(documented: &str, real: &str) -> Vec<String> {
    let (doc_lines, doc_keys) = start_up_lines(documented);
    let (real_lines, real_keys) = start_up_lines(real);
    let doc_shapes: Vec<String> = doc_lines.iter().map(|l| shape(l)).collect();
    let real_shapes: Vec<String> = real_lines.iter().map(|l| shape(l)).collect();
    let mut problems = Vec::new();
    for (line, wanted) in doc_lines.iter().zip(&doc_shapes) {
        if !real_shapes.contains(wanted) {
            problems.push(format!("documented, not printed: {line}"));
        }
    }
    for (line, printed) in real_lines.iter().zip(&real_shapes) {
        if !doc_shapes.contains(printed) {
            problems.push(format!("printed, not documented: {line}"));
        }
    }
    if doc_keys != real_keys {
        problems.push(format!(
            "POD_STARTED has the keys {real_keys:?}, the doc's example {doc_keys:?}"
        ));
    }
    problems
}

/// The start-up log of docs/configuration.md is the binary's own: its
/// example (the image under the Deployment's limits) has the lines the
/// image prints under them and no other, figure for figure but for the
/// numbers, which depend on the machine (RSS and fds at start), and a
/// `POD_STARTED` event with the same fields.
#[test]
#[ignore = "needs podman, kubectl, pyyaml: scripts/test.sh runs it"]
fn the_documented_start_up_log_is_the_images_under_the_deployments_limits() {
    let _x = crate::harness::exclusive();
    let doc = std::fs::read_to_string(crate::harness::repo().join("docs/configuration.md")).unwrap();
    let block = documented_start_up_log(&doc);
    let c = crate::manifests::deployed_container(&[], &[]);
    let logs = c.logs();
    let problems = start_up_log_differences(block, &logs);
    assert!(
        problems.is_empty(),
        "{}\nthe image printed:\n{logs}",
        problems.join("\n")
    );
}

/// The example of "The start-up log" in docs/configuration.md.
fn documented_start_up_log(doc: &str) -> &str {
    let section = doc.split("## The start-up log").nth(1).expect("the section");
    section
        .split("```text")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its example")
}

/// The comparison itself, on the release binary under plain `cargo test`:
/// its own start-up log matches itself, and a line or a `POD_STARTED` field
/// that the doc's example lacks is found. (The example once lacked the
/// healing-figures line and three fields the event had gained.)
#[test]
fn the_start_up_log_comparison_finds_missing_lines_and_fields() {
    let svc = Service::start(&[]);
    // The event may follow the listening line through the pipe a moment later.
    assert_eq!(svc.event_count("POD_STARTED", 1), 1, "{}", svc.stderr());
    let logs = svc.stderr();
    assert!(start_up_log_differences(&logs, &logs).is_empty(), "{logs}");
    let doc = std::fs::read_to_string(crate::harness::repo().join("docs/configuration.md")).unwrap();
    let (_, documented_keys) = start_up_lines(documented_start_up_log(&doc));
    let (_, keys) = start_up_lines(&logs);
    assert_eq!(
        documented_keys, keys,
        "POD_STARTED's fields: the doc's example against the binary's"
    );
    let without_a_line: String = logs
        .lines()
        .filter(|l| !l.contains("healing figures"))
        .map(|l| format!("{l}\n"))
        .collect();
    let found = start_up_log_differences(&without_a_line, &logs);
    assert!(
        found.len() == 1 && found[0].starts_with("printed, not documented: ") && found[0].contains("healing figures"),
        "{found:#?}"
    );
}

#[test]
fn log_shapes_blank_the_figures_only() {
    assert_eq!(
        shape(
            "2026-12-07T01:33:16.920Z INFO  chaos_backend::http::limits: connection cap 1113 (memory (200.0 MiB limit - 2.7 MiB"
        ),
        "chaos_backend::http::limits: connection cap N (memory (N MiB limit - N MiB"
    );
}

/// The rows of the variables table of docs/configuration.md: name, default
/// and bounds cells, as written.
fn documented_variables() -> Vec<(String, String, String)> {
    let doc = std::fs::read_to_string(crate::harness::repo().join("docs/configuration.md")).expect("the page");
    doc.lines()
        .skip_while(|l| !l.starts_with("| variable | default | bounds |"))
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let cell = |i: usize| {
                cells
                    .get(i)
                    .map_or("", |c| c.trim_matches(|c| c == '|' || c == ' ' || c == '`'))
            };
            (cell(0).to_string(), cell(1).to_string(), cell(2).to_string())
        })
        .collect()
}

/// The configuration doc and `--help` (the parser's own table) list the same
/// variables, each with the same default and the same bounds: a variable
/// the binary learns, loses or re-bounds fails here until the doc says so.
#[test]
fn the_configuration_doc_lists_what_help_lists() {
    let listed = listed_variables();
    let documented = documented_variables();
    let names = |v: Vec<&str>| {
        v.into_iter()
            .map(str::to_string)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let in_help = names(listed.iter().map(|v| v.name.as_str()).collect());
    let in_doc = names(documented.iter().map(|(n, _, _)| n.as_str()).collect());
    assert_eq!(
        in_help.difference(&in_doc).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "variables --help lists that docs/configuration.md lacks"
    );
    assert_eq!(
        in_doc.difference(&in_help).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "variables docs/configuration.md lists that the binary does not know"
    );
    for v in &listed {
        let (_, default, bounds_cell) = documented.iter().find(|(n, _, _)| *n == v.name).expect("listed");
        assert_eq!(default, &v.default, "{}: the doc's default", v.name);
        if let Some((min, max)) = bounds(&v.accepts) {
            let want = format!("{min} to {max}");
            assert!(
                bounds_cell.contains(&want),
                "{}: --help accepts {:?}, the doc's bounds say {bounds_cell:?}",
                v.name,
                v.accepts
            );
        }
    }
}

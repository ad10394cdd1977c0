//! The repository's hygiene around the vendored tiny_http: no build output
//! is tracked, the fork's diff against crates.io's 0.12.0
//! (`scripts/fork-diff.sh`) holds real changes only, each with a row in
//! `patches/tiny_http/PATCHES.md`; the code's comments explain the code as
//! it stands (no issue numbers, no file that is gone), each type name is
//! defined once, and the tests have one helper for the repository root.

use std::collections::BTreeSet;
use std::process::Command;

use crate::harness::repo;

/// Runs `git ARGS` in the checkout; CI runs on a clean clone, so a missing
/// git or a missing `.git` is a failure, never a skip.
fn git(args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run git {args:?} (is git installed?): {e}"))
}

/// `scripts/fork-diff.sh ARGS`, which must succeed.
fn fork_diff(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/fork-diff.sh"))
        .args(args)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fork-diff.sh {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn no_build_output_is_tracked_and_every_target_directory_is_ignored() {
    let out = git(&["ls-files", "-z"]);
    assert!(
        out.status.success(),
        "git ls-files failed (not a git checkout?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f == "Cargo.toml"),
        "git ls-files listed {} files",
        files.len()
    );
    let tracked: Vec<&String> = files
        .iter()
        .filter(|f| f.split('/').any(|part| part == "target"))
        .collect();
    assert!(tracked.is_empty(), "build output is tracked: {tracked:?}");
    // Any crate's target directory, not only the top one, is ignored.
    for path in [
        "target/x",
        "patches/tiny_http/target/x",
        "bench/floor/target/x",
        "a/b/target/c",
    ] {
        let out = git(&["check-ignore", "-q", "--no-index", path]);
        assert_eq!(out.status.code(), Some(0), "{path} is not ignored by .gitignore");
    }
}

#[test]
fn patches_md_has_a_row_for_every_changed_file_and_no_row_without_a_change() {
    let changed: BTreeSet<String> = fork_diff(&["--names"])
        .lines()
        .map(|l| {
            let (status, path) = l.split_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
            assert!(["A", "D", "M"].contains(&status), "bad line {l:?}");
            path.to_string()
        })
        .collect();
    assert!(changed.contains("src/lib.rs"), "{changed:?}");
    let patches = std::fs::read_to_string(repo().join("patches/tiny_http/PATCHES.md")).unwrap();
    // The files column of the table: paths in backquotes, relative to the
    // crate's root; one ending in '/' names a directory.
    let named: BTreeSet<String> = patches
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| change"))
        .flat_map(|row| {
            let files = row
                .split('|')
                .nth(2)
                .unwrap_or_else(|| panic!("no files column: {row}"));
            files
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!named.is_empty(), "no rows found in PATCHES.md");
    let covers = |name: &str, path: &str| match name.strip_suffix('/') {
        Some(dir) => path.starts_with(&format!("{dir}/")),
        None => name == path,
    };
    let without_row: Vec<&String> = changed.iter().filter(|p| !named.iter().any(|n| covers(n, p))).collect();
    assert!(
        without_row.is_empty(),
        "changed files without a row in PATCHES.md: {without_row:?}"
    );
    let without_change: Vec<&String> = named.iter().filter(|n| !changed.iter().any(|p| covers(n, p))).collect();
    assert!(
        without_change.is_empty(),
        "PATCHES.md rows name files with no change: {without_change:?}"
    );
}

/// A hunk whose removed and added lines are the same once whitespace and
/// trailing commas (which rustfmt adds or drops when it rewraps) are
/// dropped changes formatting only: the fork keeps upstream's style, so
/// there is none.
#[test]
fn the_forks_diff_has_no_formatting_only_hunk() {
    let diff = fork_diff(&[]);
    let squash = |lines: &[&str]| {
        let text: Vec<char> = lines
            .iter()
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        let trailing_comma = |i: usize| text[i] == ',' && matches!(text.get(i + 1), Some(')' | ']' | '}'));
        (0..text.len())
            .filter(|&i| !trailing_comma(i))
            .map(|i| text[i])
            .collect::<String>()
    };
    let mut file = "";
    let mut hunks = 0;
    let mut formatting_only = Vec::new();
    let mut hunk: Option<(Vec<&str>, Vec<&str>)> = None;
    let mut finish = |hunk: &mut Option<(Vec<&str>, Vec<&str>)>, file: &str| {
        if let Some((removed, added)) = hunk.take() {
            hunks += 1;
            if squash(&removed) == squash(&added) {
                formatting_only.push(format!("{file}: {:?}", removed.first()));
            }
        }
    };
    for line in diff.lines() {
        if let Some(rest) = line.strip_prefix("diff ") {
            finish(&mut hunk, file);
            file = rest.rsplit(' ').next().unwrap_or(rest);
        } else if line.starts_with("@@") {
            finish(&mut hunk, file);
            hunk = Some((Vec::new(), Vec::new()));
        } else if let Some((removed, added)) = hunk.as_mut() {
            match line.split_at(line.len().min(1)) {
                ("-", rest) => removed.push(rest),
                ("+", rest) => added.push(rest),
                _ => {}
            }
        }
    }
    finish(&mut hunk, file);
    assert!(hunks > 10, "only {hunks} hunks in:\n{diff}");
    assert!(
        formatting_only.is_empty(),
        "hunks that change formatting only: {formatting_only:#?}"
    );
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The comments of the service and of the fork say what the code is, not
/// how it came to be: no "issue N" (the project's issues are not where a
/// reader of the code can look them up; history is in the commits), no
/// "the seed's" (the first version's README), and no `` `NAME.rs` `` that
/// names a file the crate no longer has (the fork's `connections.rs` was
/// split into `connections/`, and two comments still sent readers there).
#[test]
fn comments_cite_no_issue_number_and_no_file_that_is_gone() {
    let mut problems = Vec::new();
    for root in ["src", "patches/tiny_http/src"] {
        let mut files = Vec::new();
        rust_files(&repo().join(root), &mut files);
        let names: BTreeSet<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let shown = file.strip_prefix(repo()).unwrap_or(file).display().to_string();
            for (i, line) in text.lines().enumerate() {
                let Some((_, comment)) = line.split_once("//") else {
                    continue;
                };
                let lower = comment.to_lowercase();
                let issue = lower.match_indices("issue ").any(|(at, word)| {
                    lower[at + word.len()..]
                        .trim_start_matches('#')
                        .starts_with(|c: char| c.is_ascii_digit())
                });
                if issue || lower.contains("the seed's") {
                    problems.push(format!("{shown}:{}: {}", i + 1, line.trim()));
                }
                for cited in comment.split('`').skip(1).step_by(2) {
                    let Some(stem) = cited.strip_suffix(".rs") else {
                        continue;
                    };
                    if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/') {
                        continue;
                    }
                    let exists = if cited.contains('/') {
                        files.iter().any(|f| f.ends_with(cited))
                    } else {
                        names.contains(cited)
                    };
                    if !exists {
                        problems.push(format!("{shown}:{}: `{cited}` is no file of {root}", i + 1));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "comments that cite history:\n{}",
        problems.join("\n")
    );
}

/// Every type the service defines (struct, enum, trait, type alias) has a
/// name of its own across the crate, tests included: two `Ended`s, two
/// `Outcome`s or two `Reply`s make a reader (and an import) guess which one
/// is meant.
#[test]
fn every_type_name_in_src_is_defined_once() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let mut defined: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(repo()).unwrap_or(file).display().to_string();
        for (i, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace().skip_while(|w| w.starts_with("pub"));
            let (Some(kind), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            // An associated type (`type Target = [u8];` in an impl) is not a
            // definition of the crate's own.
            let associated = kind == "type" && line.starts_with(char::is_whitespace);
            if matches!(kind, "struct" | "enum" | "trait" | "type") && !associated {
                let name: String = name.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                defined.entry(name).or_default().push(format!("{shown}:{}", i + 1));
            }
        }
    }
    assert!(defined.len() > 50, "{} type names found", defined.len());
    let twice: Vec<String> = defined
        .iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|(name, places)| format!("{name}: {}", places.join(", ")))
        .collect();
    assert!(
        twice.is_empty(),
        "type names defined more than once:\n{}",
        twice.join("\n")
    );
}

/// The test harness has one helper for the repository root
/// (`harness::repo`): no other test file works it out again from cargo's
/// manifest directory variable.
#[test]
fn the_repository_root_comes_from_one_helper() {
    let mut files = Vec::new();
    rust_files(&repo().join("tests/integration"), &mut files);
    let again: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("harness.rs"))
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let shown = f.strip_prefix(repo()).unwrap_or(f).display().to_string();
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.contains(concat!("CARGO_MANIFEST", "_DIR")))
                .map(|(i, _)| format!("{shown}:{}", i + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(again.is_empty(), "use harness::repo() instead: {again:?}");
}

/// The folder of `src/` a file belongs to (`chaos`, `http` ...), or the
/// name of a file at the top (`app`, `main`), as `crate::NAME` names it.
fn seam(src: &std::path::Path, file: &std::path::Path) -> String {
    let relative = file.strip_prefix(src).expect("under src/");
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The folders of `src/` depend on each other one way only (docs/CONTRIBUTING.md,
/// Layout): no two of them, nor `app.rs` and a folder, import each other,
/// but for the one junction the layout names (`http::routes` names the
/// handlers it dispatches to). Tests inside a module may reach anywhere.
#[test]
fn the_seams_of_src_import_each_other_one_way() {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // (from, to) -> the places that import.
    let mut edges: std::collections::BTreeMap<(String, String), Vec<String>> = std::collections::BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let from = seam(&src, file);
        let shown = file.strip_prefix(repo()).unwrap_or(file).display().to_string();
        for (i, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let to: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !to.is_empty() && to != from {
                    edges
                        .entry((from.clone(), to))
                        .or_default()
                        .push(format!("{shown}:{}", i + 1));
                }
            }
        }
    }
    assert!(edges.len() > 10, "{edges:?}");
    let junction = |places: &[String]| places.iter().all(|p| p.starts_with("src/http/routes.rs:"));
    let mut both_ways = Vec::new();
    for ((from, to), places) in &edges {
        if from < to
            && let Some(back) = edges.get(&(to.clone(), from.clone()))
            && !junction(places)
            && !junction(back)
        {
            both_ways.push(format!("{from} -> {to} ({places:?}) and {to} -> {from} ({back:?})"));
        }
    }
    assert!(
        both_ways.is_empty(),
        "seams that import each other:\n{}",
        both_ways.join("\n")
    );
}

/// PATCHES.md says each change is explained at its place by a comment
/// marked `Patch (chaos-backend)`: every upstream source file the fork
/// changes has at least one such comment among its added lines.
#[test]
fn every_changed_upstream_source_file_marks_its_patch() {
    let diff = fork_diff(&[]);
    let mut unmarked = Vec::new();
    for file in diff.split("\ndiff -ruN ").skip(1) {
        let header = file.lines().next().unwrap_or_default();
        let path = header.rsplit(' ').next().unwrap_or_default();
        // `diff -N` dates a side that does not exist at the epoch: a file
        // added or removed whole is not a change in place.
        let changed_in_place = file.lines().skip(1).take(2).all(|l| !l.contains("1970-01-01 00:00:00"));
        if !path.ends_with(".rs") || !changed_in_place {
            continue;
        }
        if !file
            .lines()
            .any(|l| l.starts_with('+') && l.contains("Patch (chaos-backend)"))
        {
            unmarked.push(path.to_string());
        }
    }
    assert!(
        unmarked.is_empty(),
        "changed upstream files with no 'Patch (chaos-backend)' comment: {unmarked:?}"
    );
}

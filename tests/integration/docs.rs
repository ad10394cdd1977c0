//! The docs cannot drift silently: every relative link and anchor in
//! README.md and docs/*.md resolves (by GitHub's anchor rules), and every
//! figure a measurement produces is either written by the script that
//! measures it or quoted with its date and the command that made it.
//! (The metrics, the routes and the configuration are held to the binary
//! by observability.rs, openapi.rs and the configuration module's tests.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{repo, temp_dir};

/// README.md and every docs/*.md of the tree at `root`.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// Each line of `text` with its number, as prose: `None` inside fenced code
/// blocks, and with inline code spans blanked out otherwise. A code span
/// may run over a line break inside a paragraph or a list item (as
/// markdown renders it), so spans are matched over each such block, not
/// line by line.
fn prose_lines(text: &str) -> Vec<(usize, Option<String>)> {
    let mut out: Vec<(usize, Option<String>)> = Vec::new();
    let mut fenced = false;
    let mut block: Vec<(usize, &str)> = Vec::new();
    let flush = |block: &mut Vec<(usize, &str)>, out: &mut Vec<(usize, Option<String>)>| {
        if block.is_empty() {
            return;
        }
        let joined = block.iter().map(|(_, l)| *l).collect::<Vec<_>>().join("\n");
        let blanked = blank_code_spans(&joined);
        for ((number, _), line) in block.iter().zip(blanked.split('\n')) {
            out.push((*number, Some(line.to_string())));
        }
        block.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("```") {
            flush(&mut block, &mut out);
            fenced = !fenced;
            out.push((i + 1, None));
            continue;
        }
        if fenced {
            out.push((i + 1, None));
            continue;
        }
        // A blank line, a heading, a table row or a new list item starts a
        // block of its own; a table row and a heading are one line each.
        let starts_item = t.starts_with("- ") || t.starts_with("* ") || t.starts_with('|') || t.starts_with('#');
        if line.trim().is_empty() || starts_item {
            flush(&mut block, &mut out);
        }
        if line.trim().is_empty() {
            out.push((i + 1, Some(String::new())));
            continue;
        }
        block.push((i + 1, line));
        if t.starts_with('|') || t.starts_with('#') {
            flush(&mut block, &mut out);
        }
    }
    flush(&mut block, &mut out);
    out
}

/// `text` with each inline code span (a run of backticks, then the text up
/// to the next run of as many) replaced by spaces of its length, line
/// breaks kept; a run of backticks that nothing closes is literal text.
fn blank_code_spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let n = run_at(i);
        let mut close = None;
        let mut j = i + n;
        while j < chars.len() {
            if chars[j] == '`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j + m);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        let end = close.unwrap_or(i + n);
        for c in &chars[i..end] {
            out.push(if *c == '\n' {
                '\n'
            } else if close.is_some() {
                ' '
            } else {
                *c
            });
        }
        i = end;
    }
    out
}

/// GitHub's anchor for a heading's text (github-slugger): the rendered
/// text lower-cased, every character but letters, digits, `-`, `_` and
/// spaces dropped, spaces made hyphens.
fn slug(heading: &str) -> String {
    // The rendered text: code spans keep their content, links their text,
    // emphasis markers go.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors a page offers: its headings' slugs (a repeat gets `-1`,
/// `-2` ...) and any `id="..."` or `name="..."` of inline HTML.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = slug(line[hashes..].trim().trim_end_matches('#').trim());
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 { base.clone() } else { format!("{base}-{n}") });
            *n += 1;
        }
        for attribute in ["id=\"", "name=\""] {
            for (i, _) in line.match_indices(attribute) {
                let value = &line[i + attribute.len()..];
                if let Some(end) = value.find('"') {
                    out.insert(value[..end].to_string());
                }
            }
        }
    }
    out
}

/// The targets of the inline links `[text](target)` and images of a line
/// of prose, and of a reference definition `[label]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    // A reference definition, `[label]: target "title"`, at the start of
    // its line (up to three spaces in).
    let t = line.trim_start_matches(' ');
    if line.len() - t.len() <= 3
        && t.starts_with('[')
        && let Some(close) = t.find("]:")
        && !t[1..close].contains(']')
    {
        let target = t[close + 2..].split_whitespace().next().unwrap_or("");
        out.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
    }
    for (i, _) in line.match_indices("](") {
        let rest = &line[i + 2..];
        let Some(end) = rest.find(')') else { continue };
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        out.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
    }
    out
}

/// Every broken relative link or anchor of the pages of the tree at `root`,
/// as `file:line: why`.
fn broken_links(root: &Path) -> Vec<String> {
    let mut broken = Vec::new();
    let mut cache: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    for page in pages(root) {
        let text = std::fs::read_to_string(&page).expect("read page");
        let name = page.strip_prefix(root).unwrap_or(&page).display().to_string();
        for (number, line) in prose_lines(&text) {
            let Some(line) = line else { continue };
            for target in link_targets(&line) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let file = if path.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap_or(root).join(path)
                };
                let relative = normalise(file.strip_prefix(root).unwrap_or(&file));
                if !file.exists() {
                    broken.push(format!("{name}:{number}: {target}: no file {relative}"));
                    continue;
                }
                if anchor.is_empty() {
                    continue;
                }
                if file.extension().is_none_or(|x| x != "md") {
                    broken.push(format!(
                        "{name}:{number}: {target}: an anchor into a file that is not markdown"
                    ));
                    continue;
                }
                let offered = cache
                    .entry(file.clone())
                    .or_insert_with(|| anchors(&std::fs::read_to_string(&file).expect("read link target")));
                if !offered.contains(anchor) {
                    broken.push(format!("{name}:{number}: {target}: {relative} has no anchor #{anchor}"));
                }
            }
        }
    }
    broken
}

/// `a/b/../c` as `a/c`.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::CurDir => {}
            other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
        }
    }
    parts.join("/")
}

/// A tree of pages made for a test: README.md and docs/NAME for each of
/// `docs`.
fn fixture_tree(tag: &str, readme: &str, docs: &[(&str, &str)]) -> PathBuf {
    let root = temp_dir(tag);
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("README.md"), readme).unwrap();
    for (name, text) in docs {
        std::fs::write(root.join("docs").join(name), text).unwrap();
    }
    root
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let broken = broken_links(repo());
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The checker itself: a missing file, a missing anchor and a repeated
/// heading's second anchor, in a tree made for it; links in code are not
/// links, and a link after a code span that runs over a line break is
/// still one (matching backticks line by line hid it), as is a reference
/// definition's target.
#[test]
fn the_link_check_finds_broken_files_and_anchors() {
    let root = fixture_tree(
        "links",
        "# Top\n\nSee [api](docs/api.md#errors), [gone](docs/gone.md), [bad](docs/api.md#nope),\n\
         [the second](docs/api.md#errors-1), [here](#top), `[code](docs/x.md)`.\n\n\
         A code span over a line break, `like\nthis one`, then [lost](docs/lost.md).\n\n\
         See [the API][api] and [that][gone].\n\n[api]: docs/api.md#errors\n[gone]: docs/api.md#gone \"Gone\"\n\n\
         ```sh\n[not a link](docs/y.md)\n```\n",
        &[(
            "api.md",
            "# API\n\n## Errors\n\n## Errors\n\n## `READY_FAIL_ON_CPU_STRESS=false`, why\n\nBack to [the top](../README.md#top) and [why](#ready_fail_on_cpu_stressfalse-why).\n",
        )],
    );
    let broken = broken_links(&root);
    assert_eq!(broken.len(), 4, "{broken:#?}");
    assert!(
        broken[0].starts_with("README.md:3: docs/gone.md: no file"),
        "{broken:#?}"
    );
    assert!(broken[1].contains("docs/api.md has no anchor #nope"), "{broken:#?}");
    assert!(
        broken[2].starts_with("README.md:7: docs/lost.md: no file"),
        "{broken:#?}"
    );
    assert!(
        broken[3].starts_with("README.md:12: docs/api.md#gone: docs/api.md has no anchor #gone"),
        "{broken:#?}"
    );
    assert_eq!(slug("Memory leak → OOM kill"), "memory-leak--oom-kill");
    assert_eq!(slug("Crash, restart and shutdown"), "crash-restart-and-shutdown");
    assert_eq!(slug("On a laptop, with cargo"), "on-a-laptop-with-cargo");
}

/// A figure that a measurement produces: a decimal number with a unit of
/// size or time, a decimal percentage, a throughput (`78297 req/s`, or in
/// thousands, `29.7k req/s`), a ratio like `1.28x` or `1.28×`, a byte count
/// with separators, or any size in decimal megabytes (how image sizes and
/// RSS are reported). Whole numbers of MiB, seconds or milliseconds are
/// settings and bounds, not measurements.
fn figures(line: &str) -> Vec<String> {
    const UNITS: &[&str] = &[
        "req/s", "k req/s", "kreq/s", "MB", "KB", "kB", "GB", "MiB", "KiB", "GiB", "ms", "µs", "us", "s", "%", "x",
        "×", "bytes",
    ];
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit() && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'));
        if !starts {
            i += 1;
            continue;
        }
        let begin = i;
        let (mut decimal, mut grouped) = (false, false);
        while i < chars.len() {
            let c = chars[i];
            let next_digit = chars.get(i + 1).is_some_and(char::is_ascii_digit);
            if c.is_ascii_digit() {
                i += 1;
            } else if c == '.' && next_digit && !decimal {
                decimal = true;
                i += 1;
            } else if c == ',' && next_digit && chars[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count() == 3 {
                grouped = true;
                i += 1;
            } else {
                break;
            }
        }
        let number: String = chars[begin..i].iter().collect();
        let after: String = chars[i..].iter().collect();
        let spaced = after.strip_prefix(' ').unwrap_or(&after);
        let unit = UNITS.iter().find(|u| {
            let candidate = if matches!(**u, "x" | "×" | "%" | "k req/s" | "kreq/s") {
                after.as_str()
            } else {
                spaced
            };
            candidate.starts_with(**u)
                && !candidate[u.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
        });
        let Some(unit) = unit else { continue };
        let measured = match *unit {
            "req/s" | "k req/s" | "kreq/s" | "MB" | "KB" | "kB" | "GB" | "µs" | "us" => true,
            "bytes" => grouped,
            _ => decimal,
        };
        // A goal or a bound is not a measurement: the number follows its
        // word (`goal is at most 3.0 MB`, `<= 0.5 ms`), or a list of such
        // numbers (`at most 3.0 MB, 1.3 MB`). A word further back, with
        // other words between, does not make a measurement a bound (`met its
        // goal in this run (2.33 ms)`).
        let before: String = chars[begin.saturating_sub(24)..begin].iter().collect();
        let bound = ["goal", "at most", "<=", ">=", "under its"]
            .iter()
            .filter_map(|w| before.rfind(w).map(|at| &before[at + w.len()..]))
            .any(|between| {
                between
                    .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ':'))
                    .filter(|w| !w.is_empty())
                    .all(|w| {
                        matches!(w, "is" | "of" | "at" | "most" | "and" | "or" | "<=" | ">=")
                            || w.starts_with(|c: char| c.is_ascii_digit())
                            || UNITS.contains(&w)
                    })
            });
        if measured && !bound {
            let gap = if matches!(*unit, "x" | "×" | "%" | "k req/s" | "kreq/s") {
                ""
            } else {
                " "
            };
            out.push(format!("{number}{gap}{unit}"));
        }
    }
    out
}

/// A date (`YYYY-MM-DD`) in the prose of `text`: one inside a code span
/// (an example's timestamp, `{"ts":"2026-12-07T04:05:48Z"}`) dates nothing.
fn has_date(text: &str) -> bool {
    let prose = blank_code_spans(text);
    let b = prose.as_bytes();
    b.windows(10).any(|w| {
        w.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
    })
}

/// A command in a code span of `text` (`scripts/...`, cargo, podman ...),
/// or the admission that it was not recorded.
fn has_command(text: &str) -> bool {
    const COMMANDS: &[&str] = &["scripts/", "cargo ", "podman ", "docker ", "wrk ", "curl ", "kubectl "];
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .contains("not recorded")
        || text
            .split('`')
            .skip(1)
            .step_by(2)
            .any(|span| COMMANDS.iter().any(|c| span.starts_with(c)))
}

/// Every figure of the pages under `root` that is neither generated nor
/// quoted with its date and command, and every region that breaks the
/// rules, as `file:line: why`.
fn unsourced_figures(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for page in pages(root) {
        let text = std::fs::read_to_string(&page).expect("read page");
        let name = page.strip_prefix(root).unwrap_or(&page).display().to_string();
        let lines: Vec<&str> = text.lines().collect();
        let prose = prose_lines(&text);
        // Regions: generated by a script, or a quoted measurement.
        let mut region: Option<(usize, String)> = None;
        let mut in_region = vec![false; lines.len()];
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if let Some(script) = t
                .strip_prefix("<!-- begin generated by ")
                .and_then(|r| r.strip_suffix(" -->"))
            {
                region = Some((i, script.to_string()));
            } else if t == "<!-- measured: begin -->" {
                region = Some((i, String::new()));
            } else if t.starts_with("<!-- end generated by ") || t == "<!-- measured: end -->" {
                let Some((start, script)) = region.take() else {
                    problems.push(format!("{name}:{}: a region ends that never began", i + 1));
                    continue;
                };
                let body = lines[start + 1..i].join("\n");
                if !has_date(&body) || !has_command(&body) {
                    problems.push(format!(
                        "{name}:{}: a measured region without its date (YYYY-MM-DD) and the command that made it",
                        start + 1
                    ));
                }
                if !script.is_empty() {
                    problems.extend(check_generated(&name, start + 1, &script, &body, t));
                }
                in_region[start..=i].iter_mut().for_each(|x| *x = true);
            }
        }
        if let Some((start, _)) = region {
            problems.push(format!("{name}:{}: a region that never ends", start + 1));
        }
        // Outside regions, a figure's block (its paragraph, list item or
        // table row) must give the date and the command itself.
        for (i, (number, line)) in prose.iter().enumerate() {
            let Some(line) = line else { continue };
            if in_region[i] {
                continue;
            }
            let found = figures(line);
            if found.is_empty() {
                continue;
            }
            let block = block_around(&lines, i);
            if !(has_date(&block) && has_command(&block)) {
                problems.push(format!(
                    "{name}:{number}: {} measured, without its date and command (quote both, or have the measuring script write it)",
                    found.join(", ")
                ));
            }
        }
    }
    problems
}

/// The paragraph, list item or table row that holds line `i`.
fn block_around(lines: &[&str], i: usize) -> String {
    let line = lines[i];
    if line.trim_start().starts_with('|') {
        return line.to_string();
    }
    let is_break = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('|') || l.starts_with('#');
    let is_item = |l: &str| {
        let t = l.trim_start();
        t.starts_with("- ") || t.starts_with("* ")
    };
    let mut start = i;
    while start > 0 && !is_break(lines[start - 1]) && !is_item(lines[start]) {
        start -= 1;
    }
    let mut end = i + 1;
    while end < lines.len() && !is_break(lines[end]) && !is_item(lines[end]) {
        end += 1;
    }
    lines[start..end].join("\n")
}

/// The rules of a block a script writes: the script exists and has
/// `--write-doc`, the block names it as its command, and a benchmark block
/// is not a `--short` run's.
fn check_generated(name: &str, line: usize, script: &str, body: &str, end: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if end != format!("<!-- end generated by {script} -->") {
        problems.push(format!("{name}:{line}: the block of {script} ends as {end:?}"));
    }
    let path = repo().join(script);
    let help = Command::new("bash").arg(&path).arg("--help").output();
    match help {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("--write-doc") => {}
        _ => problems.push(format!("{name}:{line}: {script} does not exist or has no --write-doc")),
    }
    if !body.contains(&format!("`{script}")) {
        problems.push(format!(
            "{name}:{line}: the block does not name {script} as the command that made it"
        ));
    }
    if body.contains("--short") || body.contains("short mode") {
        problems.push(format!("{name}:{line}: a --short run's figures are too short to quote"));
    }
    problems
}

#[test]
fn every_measured_figure_is_generated_or_dated_with_its_command() {
    let problems = unsourced_figures(repo());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check itself, on pages made for it: the stale "2.2 MB" of the old
/// README is found, and so are a throughput in thousands, a ratio
/// written with `×`, a figure that a goal is merely near, and one whose
/// only date is an example's timestamp; a dated figure with its command, a generated block and
/// a setting are not; a `--short` table and an undated region are refused.
#[test]
fn the_figure_check_finds_undated_figures_and_bad_regions() {
    let root = fixture_tree(
        "figures",
        "# Top\n\nThe image is `FROM scratch`: one static binary (2.2 MB on amd64, 1.2 MB\non arm64).\n\n\
         A leak of 64 MiB takes 10 s at most; the goal is 2.5 MB.\n\n\
         With 4 arenas it served 29.7k req/s, 1.1× the floor.\n\n\
         Start to ready met its goal in this run (2.33 ms); the goal is at most 3.0 MB, 1.3 MB compressed.\n\n\
         | `curl -si localhost:8080/` | `{\"ts\":\"2026-12-07T04:05:48Z\"}` in 0.45 ms |\n\n\
         It served 78297 req/s (measured 2026-11-30 with `scripts/bench.sh`).\n",
        &[(
            "perf.md",
            "# Perf\n\n<!-- begin generated by scripts/bench.sh -->\nMeasured 2026-12-01 by `scripts/bench.sh --short`:\n\n\
             | a | 1.28x |\n<!-- end generated by scripts/bench.sh -->\n\n\
             <!-- measured: begin -->\nSome day, 0.454 ms.\n<!-- measured: end -->\n",
        )],
    );
    let problems = unsourced_figures(&root);
    assert_eq!(problems.len(), 6, "{problems:#?}");
    assert!(
        problems[0].starts_with("README.md:3: 2.2 MB, 1.2 MB measured"),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with("README.md:8: 29.7k req/s, 1.1× measured"),
        "{problems:#?}"
    );
    assert!(
        problems[2].starts_with("README.md:10: 2.33 ms measured"),
        "{problems:#?}"
    );
    assert!(
        problems[3].starts_with("README.md:12: 0.45 ms measured"),
        "{problems:#?}"
    );
    assert!(problems[4].contains("too short to quote"), "{problems:#?}");
    assert!(
        problems[5].starts_with("docs/perf.md:9: a measured region without its date"),
        "{problems:#?}"
    );
}

/// scripts/update-doc.sh rewrites its block and nothing else, and refuses a
/// file without the block, with it twice, or with its lines out of order,
/// leaving the file as it was.
#[test]
fn update_doc_rewrites_only_its_block() {
    let dir = temp_dir("update-doc");
    let file = dir.join("page.md");
    let script = repo().join("scripts/update-doc.sh");
    let run = |content: &str, name: &str| {
        let mut child = Command::new("bash")
            .arg(&script)
            .arg(&file)
            .arg(name)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run update-doc.sh");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(content.as_bytes()).unwrap();
        child.wait().expect("update-doc.sh").code()
    };
    let page = "a\n<!-- begin generated by scripts/x.sh -->\nold\n<!-- end generated by scripts/x.sh -->\nb\n";
    std::fs::write(&file, page).unwrap();
    assert_eq!(run("new 1\nnew 2\n", "scripts/x.sh"), Some(0));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "a\n<!-- begin generated by scripts/x.sh -->\nnew 1\nnew 2\n<!-- end generated by scripts/x.sh -->\nb\n"
    );
    for bad in [
        "a\nb\n".to_string(),
        format!("{page}{page}"),
        "<!-- end generated by scripts/x.sh -->\n<!-- begin generated by scripts/x.sh -->\n".to_string(),
    ] {
        std::fs::write(&file, &bad).unwrap();
        assert_eq!(run("new\n", "scripts/x.sh"), Some(1), "{bad:?}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), bad, "left as it was");
    }
}

/// Every page longer than two screens (about 100 lines) opens with a table
/// of contents: a list of links to its own headings before its first `##`.
#[test]
fn long_pages_have_a_table_of_contents() {
    for page in pages(repo()) {
        let text = std::fs::read_to_string(&page).unwrap();
        if text.lines().count() <= 100 {
            continue;
        }
        let head = text.split("\n## ").next().unwrap_or("");
        let own = anchors(&text);
        let listed: Vec<String> = head
            .lines()
            .filter(|l| l.trim_start().starts_with("- ["))
            .flat_map(link_targets)
            .collect();
        assert!(
            listed.len() >= 3
                && listed
                    .iter()
                    .all(|t| t.strip_prefix('#').is_some_and(|a| own.contains(a))),
            "{} is {} lines long and needs a table of contents of its own headings before its first section: {listed:?}",
            page.display(),
            text.lines().count()
        );
    }
}

/// The tests of `dir` (one crate's files) that are `#[ignore]`d as needing
/// an outside tool: (file, test name).
fn tests_needing_a_tool(dir: &Path) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("tests dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).expect("read test file");
        let mut ignored = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with("#[ignore = \"needs ") {
                ignored = true;
            } else if ignored && let Some(rest) = line.strip_prefix("fn ") {
                let name = rest.split('(').next().unwrap_or_default().to_string();
                found.insert((file.clone(), name));
                ignored = false;
            }
        }
    }
    found
}

/// The rows of the table "Tests that need an outside tool": each file with
/// the tests it names, or `None` for a file listed as `(all)` or `(all but
/// ...)`.
fn tool_table(contributing: &str) -> Vec<(String, Option<Vec<String>>)> {
    let section = contributing
        .split("### Tests that need an outside tool")
        .nth(1)
        .expect("the section")
        .split("\n#")
        .next()
        .unwrap_or_default();
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cell = line.split(" | ").next().unwrap_or_default().trim_start_matches("| ");
        // A cell may name tests of several files: `a.rs` `t1`, `t2`, `b.rs` `t3`.
        let mut current: Option<(String, Option<Vec<String>>)> = None;
        for (i, span) in cell.split('`').enumerate() {
            if i % 2 == 1 {
                if span.ends_with(".rs") {
                    rows.extend(current.take());
                    current = Some((span.to_string(), Some(Vec::new())));
                } else if let Some((_, Some(names))) = current.as_mut() {
                    names.push(span.to_string());
                }
            } else if span.contains("(all") {
                if let Some((_, names)) = current.as_mut() {
                    *names = None;
                }
            }
        }
        rows.extend(current);
    }
    rows
}

/// Every test that needs an outside tool has its row in CONTRIBUTING's
/// table (so a contributor knows what to install, and scripts/test.sh's
/// installs can be checked against it), and every test the table names is
/// one: a renamed, removed or newly ignored test fails here until the
/// table says so.
#[test]
fn the_outside_tool_table_lists_every_ignored_test() {
    let ignored = tests_needing_a_tool(&repo().join("tests/integration"));
    assert!(ignored.len() > 20, "{ignored:?}");
    let table = tool_table(&std::fs::read_to_string(repo().join("docs/CONTRIBUTING.md")).expect("CONTRIBUTING"));
    let mut missing: Vec<&(String, String)> = Vec::new();
    for test in &ignored {
        let covered = table
            .iter()
            .any(|(file, names)| *file == test.0 && names.as_ref().is_none_or(|names| names.contains(&test.1)));
        if !covered {
            missing.push(test);
        }
    }
    assert!(
        missing.is_empty(),
        "tests ignored as needing a tool with no row in docs/CONTRIBUTING.md: {missing:?}"
    );
    let stale: Vec<(String, String)> = table
        .iter()
        .flat_map(|(file, names)| names.iter().flatten().map(move |n| (file.clone(), n.clone())))
        .filter(|t| !ignored.contains(t))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/CONTRIBUTING.md names tests that are not ignored as needing a tool: {stale:?}"
    );
    let files_all: Vec<&String> = table.iter().filter(|(_, n)| n.is_none()).map(|(f, _)| f).collect();
    for file in files_all {
        assert!(
            ignored.iter().any(|(f, _)| f == file),
            "{file} is listed as (all) but has no test that needs a tool"
        );
    }
}

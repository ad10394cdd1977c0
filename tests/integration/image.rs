//! The multi-arch image: one manifest list with linux/amd64 and
//! linux/arm64 built by scripts/build-image.sh under podman, `--platform`
//! to pick one, and the `--oci-archive` that kind and containerd import.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::container::{MAX_IMAGE_BYTES, MAX_PULLED_BYTES, built, image, image_sizes, image_tag, podman, podman_ok};
use crate::harness::{exclusive, poll, repo, temp_dir, try_request};

const PLATFORMS: [&str; 2] = ["linux/amd64", "linux/arm64"];

/// The platforms a manifest list names, in order.
fn listed_platforms(list: &Value) -> Vec<String> {
    list["manifests"]
        .as_array()
        .expect("a manifest list has manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn manifest_list_names_amd64_and_arm64_and_each_image_says_so() {
    let tag = image();
    let dir = temp_dir("manifest");
    let list: Value = serde_json::from_str(&podman_ok(&dir, &["manifest", "inspect", tag])).expect("manifest JSON");
    let mut platforms = listed_platforms(&list);
    platforms.sort();
    assert_eq!(platforms, PLATFORMS, "{list:#}");
    // Each entry is an image of its own architecture, not a copy of the host's.
    for entry in list["manifests"].as_array().unwrap() {
        let digest = entry["digest"].as_str().expect("digest");
        let found = podman_ok(
            &dir,
            &[
                "image",
                "inspect",
                "--format",
                "{{.Os}}/{{.Architecture}}",
                &format!("{tag}@{digest}"),
            ],
        );
        let want = format!("linux/{}", entry["platform"]["architecture"].as_str().unwrap());
        assert_eq!(found, want, "instance {digest}");
    }
    let sizes = &built().sizes;
    let mut names: Vec<&str> = sizes.iter().map(|(p, _)| p.as_str()).collect();
    names.sort();
    assert_eq!(names, PLATFORMS, "one size line per platform");
    for (platform, size) in sizes {
        assert!(*size <= MAX_IMAGE_BYTES, "{platform}: {size} bytes");
    }
}

/// The archive as kind and containerd see it: an OCI index whose entries
/// point at image configs with the right architecture and os.
#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn oci_archive_is_an_index_of_both_platforms() {
    image();
    let out = temp_dir("oci");
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&built().archive)
        .arg("-C")
        .arg(&out)
        .status()
        .expect("tar");
    assert!(status.success());
    let blob = |digest: &str| -> Value {
        let path = out.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .expect("JSON blob")
    };
    let top: Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let entry = &top["manifests"][0];
    assert_eq!(entry["mediaType"], "application/vnd.oci.image.index.v1+json", "{top:#}");
    let name = entry["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("");
    assert_eq!(name, image_tag(), "the name containerd gives the image");
    let index = blob(entry["digest"].as_str().unwrap());
    let mut platforms = listed_platforms(&index);
    platforms.sort();
    assert_eq!(platforms, PLATFORMS, "{index:#}");
    for m in index["manifests"].as_array().unwrap() {
        let manifest = blob(m["digest"].as_str().unwrap());
        // What users pull: the compressed layers, within the image's goal.
        let layers = manifest["layers"].as_array().unwrap();
        for layer in layers {
            let media = layer["mediaType"].as_str().unwrap_or("");
            assert!(
                media.ends_with("+gzip") || media.ends_with("+zstd"),
                "a compressed layer: {media}"
            );
        }
        let pulled: u64 = layers.iter().map(|l| l["size"].as_u64().unwrap()).sum();
        eprintln!(
            "{}: {pulled} bytes of compressed layers",
            m["platform"]["architecture"].as_str().unwrap_or("?")
        );
        assert!(
            pulled <= MAX_PULLED_BYTES,
            "{pulled} bytes pulled, goal {MAX_PULLED_BYTES}"
        );
        let config = blob(manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(config["architecture"], m["platform"]["architecture"], "{config:#}");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["User"], "65532:65532");
        // The binary in the layers is built for that architecture: ELF
        // e_machine 62 (x86-64) or 183 (AArch64).
        let arch = m["platform"]["architecture"].as_str().unwrap();
        let layers = temp_dir(&format!("layers-{arch}"));
        for layer in manifest["layers"].as_array().unwrap() {
            let path = out
                .join("blobs/sha256")
                .join(layer["digest"].as_str().unwrap().trim_start_matches("sha256:"));
            let status = Command::new("tar")
                .arg("-xf")
                .arg(&path)
                .arg("-C")
                .arg(&layers)
                .status()
                .unwrap();
            assert!(status.success(), "untar {}", path.display());
        }
        let elf = std::fs::read(layers.join("chaos-backend")).expect("/chaos-backend in the layers");
        let machine = u16::from_le_bytes([elf[18], elf[19]]);
        assert_eq!(machine, if arch == "arm64" { 183 } else { 62 }, "{arch} binary");
    }
}

/// `--platform linux/arm64` builds that platform alone, under a tag of its
/// own so that the shared test image is left as it is. The tag is a short
/// name, as a kind user gives it: the archive names the image as
/// Kubernetes will look it up, under docker.io/library.
/// `--write-doc` writes what was built into the block of docs/containers.md
/// (a copy of it here), with the date and the command, and leaves the rest
/// of the page as it was: each platform's size, in bytes and decimal MB.
#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn write_doc_puts_the_sizes_it_built_into_the_doc() {
    let built = built();
    let written = std::fs::read_to_string(&built.doc).expect("the rewritten copy");
    let original = std::fs::read_to_string(repo().join("docs/containers.md")).expect("docs/containers.md");
    let begin = "<!-- begin generated by scripts/build-image.sh -->\n";
    let end = "<!-- end generated by scripts/build-image.sh -->";
    let outside = |text: &str| -> (String, String) {
        let (before, rest) = text.split_once(begin).expect("the begin line");
        let (_, after) = rest.split_once(end).expect("the end line");
        (before.to_string(), after.to_string())
    };
    assert_eq!(outside(&written), outside(&original), "only the block changes");
    let block = written.split_once(begin).unwrap().1.split_once(end).unwrap().0;
    assert!(block.starts_with("Measured 20"), "{block}");
    assert!(block.contains("by `scripts/build-image.sh --oci-archive "), "{block}");
    for (platform, bytes) in &built.sizes {
        let grouped = bytes
            .to_string()
            .as_bytes()
            .rchunks(3)
            .rev()
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(",");
        let row = format!("| {platform} | {:.2} MB ({grouped} bytes) |", *bytes as f64 / 1e6);
        assert!(block.contains(&row), "no row {row:?} in:\n{block}");
    }
    assert_eq!(block.matches("\n| linux/").count(), built.sizes.len(), "{block}");
}

#[test]
#[ignore = "needs podman: scripts/test.sh runs it"]
fn platform_flag_builds_one_platform() {
    image();
    let _x = exclusive();
    let dir = temp_dir("one-platform");
    let short = format!("chaos-backend-it-{}:arm64-only", std::process::id());
    let tag = format!("localhost/{short}");
    let archive = dir.join("arm64.tar");
    let out = Command::new("bash")
        .arg(repo().join("scripts/build-image.sh"))
        .args(["--platform", "linux/arm64", "--oci-archive"])
        .arg(&archive)
        .arg(&short)
        .env("CONTAINER_ENGINE", "podman")
        .env("CONTAINERS_CONF", repo().join("tests/podman/containers.conf"))
        .current_dir(&dir)
        .output()
        .expect("run build-image.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let sizes = image_sizes(&stdout).unwrap();
    assert_eq!(
        sizes.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["linux/arm64"]
    );
    let list: Value = serde_json::from_str(&podman_ok(&dir, &["manifest", "inspect", &tag])).unwrap();
    assert_eq!(listed_platforms(&list), ["linux/arm64"]);
    let _ = podman(&dir, &["manifest", "rm", &tag]);
    let index = Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("index.json")
        .output()
        .expect("tar");
    let index: Value = serde_json::from_slice(&index.stdout).expect("index.json");
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        format!("docker.io/library/{short}")
    );

    // A platform it cannot build is refused up front, naming it.
    let out = Command::new("bash")
        .arg(repo().join("scripts/build-image.sh"))
        .args(["--platform", "linux/s390x", &tag])
        .env("CONTAINER_ENGINE", "podman")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"linux/s390x\""));
}

/// `ctr` against the containerd that runs beside dockerd (scripts/test.sh
/// exports its socket as CHAOS_CONTAINERD_ADDRESS).
fn ctr(args: &[&str]) -> std::process::Output {
    let address = std::env::var("CHAOS_CONTAINERD_ADDRESS")
        .expect("CHAOS_CONTAINERD_ADDRESS: the containerd socket (scripts/test.sh starts dockerd and sets it)");
    Command::new("ctr")
        .args(["--address", &address, "--namespace", "k8s.io"])
        .args(args)
        .output()
        .expect("ctr must be installed (Debian's containerd)")
}

fn ctr_ok(args: &[&str]) -> String {
    let out = ctr(args);
    assert!(
        out.status.success(),
        "ctr {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `kind load image-archive` does: import every platform into the
/// k8s.io namespace; then the host's platform runs from it under
/// containerd and stops with 0 on SIGTERM.
#[test]
#[ignore = "needs containerd and podman: scripts/test.sh runs it"]
fn oci_archive_imports_into_containerd_and_runs() {
    let archive = &built().archive;
    let _x = exclusive();
    let name = image_tag();
    let _ = ctr(&["images", "rm", name]);
    let imported = ctr_ok(&["images", "import", "--all-platforms", archive.to_str().unwrap()]);
    assert!(imported.contains(name), "{imported}");
    let listing = ctr_ok(&["images", "ls"]);
    let line = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in:\n{listing}"));
    assert!(line.contains("linux/amd64,linux/arm64"), "{line}");

    let port = free_port();
    let id = temp_dir("ctr").file_name().unwrap().to_string_lossy().to_string();
    // In the foreground, `ctr run` exits with the task's own status.
    let address = std::env::var("CHAOS_CONTAINERD_ADDRESS").unwrap();
    let mut task = Command::new("ctr")
        .args([
            "--address",
            &address,
            "--namespace",
            "k8s.io",
            "run",
            "--rm",
            "--net-host",
        ])
        .args(["--env", &format!("PORT={port}"), "--env", "SHUTDOWN_DELAY_SECONDS=0"])
        .args([name, &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr run");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let health = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        try_request(addr, "GET", "/health", &[], "", Duration::from_millis(300)).ok()
    });
    let _ = ctr(&["task", "kill", "--signal", "SIGTERM", &id]);
    let exited = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        task.try_wait().expect("try_wait")
    });
    if exited.is_none() {
        let _ = ctr(&["task", "kill", "--signal", "SIGKILL", &id]);
        let _ = task.wait();
    }
    let _ = ctr(&["containers", "rm", &id]);
    let _ = ctr(&["images", "rm", name]);
    assert_eq!(health.map(|r| r.status), Some(200), "the image runs under containerd");
    let status = exited.expect("SIGTERM stops the task within 10 s");
    assert_eq!(status.code(), Some(0), "{}", crate::harness::describe(status));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

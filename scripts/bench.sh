#!/usr/bin/env bash
# bench.sh: builds release and prints the benchmark table (markdown).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/bench.sh [--short] [--no-image]

Builds the release binary, the tiny_http floor (bench/floor: unpatched
crates.io tiny_http, built outside the workspace) and the
harness (examples/bench.rs), builds the image with scripts/build-image.sh,
and prints a markdown table: start to ready, idle RSS, throughput and
latency against the floor (wrk, 16 connections), /health under a saturated
CPU and in podman at 500m, leak rate against a raw page touch, CPU accuracy
at 250m, 500m and 1500m (process CPU time, and cgroup usage in podman),
the traffic observer at 500 requests a second (due-time lateness, RSS;
against the service and against a target that never answers), crash to
exit, image size. Each figure is a median over repeated runs; each
comparison a ratio within the same run. It reports; it does not fail on a
missed goal.

  --short     a quick pass that checks the benchmark works (CI runs this);
              its figures are too short to quote
  --no-image  skip the podman figures
Installs wrk (Debian) when missing; needs podman for the image figures.
USAGE
}

short=()
image=1
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --short) short=(--short) ;;
    --no-image) image=0 ;;
    *) echo "bench.sh: unknown argument \"$arg\"" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v wrk >/dev/null 2>&1; then
  echo "==> installing wrk" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
fi

# The static build that ships in the image, for the floor too.
target=x86_64-unknown-linux-gnu
echo "==> cargo build --release --target $target, static (service, floor, harness)" >&2
RUSTFLAGS='-C target-feature=+crt-static -C relocation-model=static' \
  cargo build --release --locked --target "$target" --bin chaos-backend --example bench >&2
RUSTFLAGS='-C target-feature=+crt-static -C relocation-model=static' \
  cargo build --release --locked --target "$target" --manifest-path bench/floor/Cargo.toml \
  --target-dir "${CARGO_TARGET_DIR:-target}/floor" >&2
out="${CARGO_TARGET_DIR:-target}/$target/release"
floor="${CARGO_TARGET_DIR:-target}/floor/$target/release/floor"

image_args=()
if ((image)); then
  tag=localhost/chaos-backend:bench
  CONTAINER_ENGINE=podman CONTAINERS_CONF="$PWD/tests/podman/containers.conf" \
    scripts/build-image.sh "$tag" >&2
  image_args=(--image "$tag")
fi

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/Mem:/ { print $2 }') GiB, Linux $(uname -r)"
echo
"$out/examples/bench" --binary "$out/chaos-backend" --floor "$floor" \
  "${image_args[@]}" "${short[@]}"

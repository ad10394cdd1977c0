#!/usr/bin/env bash
# build-image.sh: compiles the static binary and builds the scratch image
# from Containerfile, with docker or podman.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/build-image.sh [TAG]

Builds the chaos-backend image (default tag chaos-backend:latest):
  1. compiles a static binary on Linux x86_64:
     RUSTFLAGS='-C target-feature=+crt-static'
       cargo build --release --target x86_64-unknown-linux-gnu
  2. lays out the build context in target/image (the binary and an empty
     state directory), so no base image is ever pulled;
  3. builds Containerfile with $CONTAINER_ENGINE if set, else docker if its
     daemon answers, else podman (with --format docker, so that HEALTHCHECK
     is kept).
Prints the image's size. Needs cargo and a container engine.
USAGE
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac
[[ $# -le 1 ]] || { usage >&2; exit 2; }
tag="${1:-chaos-backend:latest}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(uname -s) != Linux || $(uname -m) != x86_64 ]]; then
  echo "build-image.sh: the static binary is built for Linux x86_64; on $(uname -s) $(uname -m) build it in a Linux container (see README.md)" >&2
  exit 2
fi

engine="${CONTAINER_ENGINE:-}"
if [[ -z $engine ]]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null 2>&1; then
    engine=podman
  else
    echo "build-image.sh: no container engine: install docker or podman, or set CONTAINER_ENGINE" >&2
    exit 1
  fi
fi

target=x86_64-unknown-linux-gnu
echo "==> cargo build --release --target $target (static)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target"

context=target/image
rm -rf "$context"
mkdir -p "$context/state"
cp "${CARGO_TARGET_DIR:-target}/$target/release/chaos-backend" "$context/chaos-backend"

format=()
[[ $(basename "$engine") != podman ]] || format=(--format docker)
echo "==> $engine build -t $tag"
"$engine" build "${format[@]}" -f Containerfile -t "$tag" "$context"

size=$("$engine" image inspect --format '{{.Size}}' "$tag")
echo "image $tag: $size bytes ($((size / 1024)) KiB)"

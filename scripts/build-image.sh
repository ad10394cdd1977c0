#!/usr/bin/env bash
# build-image.sh: cross-compiles the static binary for each platform and
# builds one scratch image from Containerfile: a multi-arch manifest list
# with podman, the host's platform with Docker Engine.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/build-image.sh [--platform LIST] [--oci-archive FILE] [TAG]

Builds the chaos-backend image (default tag chaos-backend:latest).

  --platform LIST     comma-separated, from linux/amd64 and linux/arm64.
                      Default with podman: both, as one manifest list.
                      Default with docker: the daemon's own platform, the
                      only one Docker Engine 20.10 builds and keeps.
  --oci-archive FILE  also write the image (every platform built, as one
                      OCI index) to FILE, for `kind load image-archive FILE`
                      or `ctr -n k8s.io images import --all-platforms FILE`.
                      Needs podman.

For each platform, one cargo command builds a static binary; no C cross
toolchain is needed (rustup adds the Rust target when it is missing):
  linux/arm64  aarch64-unknown-linux-musl, linked by rust-lld
  linux/amd64  x86_64-unknown-linux-gnu with crt-static (not PIE) on a Linux x86_64
               host (measured faster than musl: see README "Performance");
               elsewhere x86_64-unknown-linux-musl, linked by rust-lld
The build context of each platform (the binary and an empty state
directory) is laid out in a fresh directory under target/, so no base
image is ever pulled; the host's platform's, when built, is left in
target/image, which compose.yaml builds from when the image is missing.
The engine is $CONTAINER_ENGINE if set, else docker if its daemon
answers, else podman (with --format docker, which keeps the HEALTHCHECK).
Prints each platform's image size.
USAGE
}

die() {
  echo "build-image.sh: $*" >&2
  exit 2
}

platforms=""
archive=""
tag=""
while (($# > 0)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --platform)
      [[ $# -ge 2 && -n $2 ]] || die "--platform needs a value"
      platforms="$2"; shift 2 ;;
    --platform=*)
      platforms="${1#*=}"; shift
      [[ -n $platforms ]] || die "--platform needs a value" ;;
    --oci-archive)
      [[ $# -ge 2 && -n $2 ]] || die "--oci-archive needs a file"
      archive="$2"; shift 2 ;;
    --oci-archive=*)
      archive="${1#*=}"; shift
      [[ -n $archive ]] || die "--oci-archive needs a file" ;;
    -*) usage >&2; die "unknown option \"$1\"" ;;
    *)
      [[ -z $tag ]] || { usage >&2; die "one TAG only, got \"$tag\" and \"$1\""; }
      tag="$1"; shift ;;
  esac
done
tag="${tag:-chaos-backend:latest}"
if [[ -n $archive && $archive != /* ]]; then
  archive="$PWD/$archive"
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

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
kind=podman
[[ $(basename "$engine") == podman ]] || kind=docker

if [[ $kind == docker ]]; then
  # Docker Engine 20.10 keeps one platform per local image, and its builder
  # cannot COPY into a FROM scratch image of a foreign platform.
  host_platform="linux/$("$engine" version --format '{{.Server.Arch}}')"
  platforms="${platforms:-$host_platform}"
  [[ $platforms == "$host_platform" ]] ||
    die "Docker Engine builds only its own platform ($host_platform), not \"$platforms\": use CONTAINER_ENGINE=podman for other or several platforms"
  [[ -z $archive ]] || die "--oci-archive needs podman (docker load cannot read OCI archives): use CONTAINER_ENGINE=podman"
fi
platforms="${platforms:-linux/amd64,linux/arm64}"
IFS=, read -r -a wanted <<<"$platforms"
((${#wanted[@]} > 0)) || die "--platform is empty"

# The Rust target of each architecture, and how it is linked.
rust_target() {
  case "$1" in
    arm64) echo aarch64-unknown-linux-musl ;;
    amd64)
      if [[ $(uname -s) == Linux && $(uname -m) == x86_64 ]]; then
        echo x86_64-unknown-linux-gnu
      else
        echo x86_64-unknown-linux-musl
      fi ;;
  esac
}
# The flags of the amd64 (glibc) build; scripts/bench.sh builds with them too.
GNU_RUSTFLAGS="${GNU_RUSTFLAGS:--C target-feature=+crt-static -C relocation-model=static}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER:-rust-lld}"
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER="${CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER:-rust-lld}"

# (No empty-array expansions: macOS's bash 3.2 calls them unbound.)
arches=()
seen=" "
for platform in "${wanted[@]}"; do
  case "$platform" in
    linux/amd64 | linux/arm64) ;;
    *) die "unsupported platform \"$platform\": expected linux/amd64 or linux/arm64" ;;
  esac
  arch="${platform#linux/}"
  [[ $seen != *" $arch "* ]] || die "platform \"$platform\" given twice"
  seen+="$arch "
  arches+=("$arch")
done

# A build context per run (two builds at once must not share one), removed
# at the end.
mkdir -p target
context_root="$(mktemp -d target/image.XXXXXX)"
trap 'rm -rf "$context_root"' EXIT
for arch in "${arches[@]}"; do
  target="$(rust_target "$arch")"
  if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$target"; then
    echo "==> rustup target add $target"
    rustup target add "$target"
  fi
  echo "==> linux/$arch: cargo build --release --target $target (static)"
  if [[ $target == *-gnu ]]; then
    # musl targets link statically by default; glibc needs crt-static.
    # relocation-model=static links a plain static executable instead of a
    # static PIE: no table of 60 KB of relocations, which keeps the image
    # under its 3.0 MB goal. The stack, heap and mappings stay randomised;
    # only the binary's own load address is fixed.
    RUSTFLAGS="$GNU_RUSTFLAGS" cargo build --release --locked --target "$target"
  else
    cargo build --release --locked --target "$target"
  fi
  mkdir -p "$context_root/$arch/state"
  cp "${CARGO_TARGET_DIR:-target}/$target/release/chaos-backend" "$context_root/$arch/chaos-backend"
done

# compose.yaml builds from target/image when the image is missing: leave
# the host's platform there, when it was built.
case "$(uname -m)" in
  x86_64 | amd64) host_arch=amd64 ;;
  aarch64 | arm64) host_arch=arm64 ;;
  *) host_arch="" ;;
esac
if [[ -n $host_arch && -d $context_root/$host_arch ]]; then
  rm -rf target/image
  cp -R "$context_root/$host_arch" target/image
fi

# Checks an image's platform and prints its size.
report() {
  local image="$1" arch="$2" found size
  found="$("$engine" image inspect --format '{{.Os}}/{{.Architecture}}' "$image")"
  [[ $found == "linux/$arch" ]] || { echo "build-image.sh: image for linux/$arch says $found" >&2; exit 1; }
  size="$("$engine" image inspect --format '{{.Size}}' "$image")"
  echo "image $tag linux/$arch: $size bytes ($((size / 1024)) KiB)"
}

if [[ $kind == docker ]]; then
  echo "==> $engine build -t $tag (linux/${arches[0]})"
  "$engine" build -f Containerfile -t "$tag" "$context_root/${arches[0]}"
  report "$tag" "${arches[0]}"
  exit 0
fi

# podman: one manifest list, an image per platform in it.
if "$engine" manifest exists "$tag" 2>/dev/null; then
  "$engine" manifest rm "$tag" >/dev/null
elif "$engine" image exists "$tag"; then
  "$engine" untag "$tag" "$tag"
fi
"$engine" manifest create "$tag" >/dev/null
for arch in "${arches[@]}"; do
  echo "==> $engine build --platform linux/$arch, then manifest add $tag"
  # Built, then added by id: with --manifest, podman 4.3's --iidfile names
  # the list rather than the image.
  "$engine" build --format docker --platform "linux/$arch" \
    --iidfile "$context_root/$arch.iid" -f Containerfile "$context_root/$arch"
  id="$(cat "$context_root/$arch.iid")"
  "$engine" manifest add "$tag" "containers-storage:${id#sha256:}" >/dev/null
  report "$id" "$arch"
done
echo "manifest $tag: $("$engine" manifest inspect "$tag" |
  grep -o '"architecture": *"[a-z0-9]*"' | sed 's/.*"\([a-z0-9]*\)"$/linux\/\1/' | tr '\n' ' ')"

if [[ -n $archive ]]; then
  # The name inside the archive is the one Kubernetes looks for: a short
  # name such as chaos-backend:0.1.0 means docker.io/library/chaos-backend:0.1.0.
  ref="$tag"
  first="${ref%%/*}"
  if [[ $ref != */* ]]; then
    ref="docker.io/library/$ref"
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
    ref="docker.io/$ref"
  fi
  [[ ${ref##*/} == *:* || $ref == *@* ]] || ref="$ref:latest"
  rm -f "$archive"
  echo "==> $engine manifest push --all $tag oci-archive:$archive ($ref)"
  "$engine" manifest push --all --format oci "$tag" "oci-archive:$archive:$ref"
  echo "archive $archive: $(wc -c <"$archive" | tr -d ' ') bytes, image $ref"
fi

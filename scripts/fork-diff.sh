#!/usr/bin/env bash
# fork-diff.sh: the vendored tiny_http (patches/tiny_http) against the
# crates.io tiny_http 0.12.0 it was vendored from.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/fork-diff.sh [--names] [--help]

Prints the unified diff of patches/tiny_http against crates.io's
tiny_http 0.12.0, or with --names one line per file that differs:
  A PATH   only in the fork
  D PATH   only upstream (removed in the fork)
  M PATH   in both, changed
PATH is relative to the crate's root. patches/tiny_http/PATCHES.md has one
row per such file (tests/integration/fork.rs checks both directions).

The upstream source is the .crate file in cargo's registry cache, checked
against the checksum in bench/floor/Cargo.lock (the bench floor builds
unpatched crates.io tiny_http 0.12.0); when cargo has none, it runs
`cargo fetch --locked --manifest-path bench/floor/Cargo.toml`.
Compared: every file of the crate but cargo's packaging files
(.cargo_vcs_info.json, .cargo-ok; Cargo.toml is compared with the
Cargo.toml.orig that `cargo publish` keeps), and in the fork every file but
PATCHES.md (it describes this diff) and target/.

Exit status: 0 whether or not the fork differs; non-zero on an error.
USAGE
}

names=0
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --names) names=1 ;;
    *) echo "fork-diff.sh: unknown argument \"$arg\"" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
fork=patches/tiny_http
version=0.12.0
cargo_home="${CARGO_HOME:-$HOME/.cargo}"

# The checksum cargo recorded for crates.io's tiny_http in the floor's lock.
checksum="$(awk -v v="$version" '
  /^\[\[package\]\]/ { name = ""; ver = "" }
  /^name = / { name = $3 }
  /^version = / { ver = $3 }
  /^checksum = / && name == "\"tiny_http\"" && ver == "\"" v "\"" { gsub(/"/, "", $3); print $3 }
' bench/floor/Cargo.lock)"
if [[ -z $checksum ]]; then
  echo "fork-diff.sh: no checksum for tiny_http $version in bench/floor/Cargo.lock" >&2
  exit 1
fi

find_crate() {
  local f
  for f in "$cargo_home"/registry/cache/*/"tiny_http-$version.crate"; do
    if [[ -f $f ]] && [[ $(sha256sum "$f" | cut -d' ' -f1) == "$checksum" ]]; then
      printf '%s\n' "$f"
      return 0
    fi
  done
  return 1
}

if ! crate="$(find_crate)"; then
  echo "==> cargo fetch --locked --manifest-path bench/floor/Cargo.toml (crates.io tiny_http $version)" >&2
  cargo fetch --locked --manifest-path bench/floor/Cargo.toml >&2
  crate="$(find_crate)" || {
    echo "fork-diff.sh: no tiny_http-$version.crate with checksum $checksum under $cargo_home/registry/cache" >&2
    exit 1
  }
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/upstream"
tar -xzf "$crate" -C "$work/upstream" --strip-components=1
(
  cd "$work/upstream"
  rm -f .cargo_vcs_info.json .cargo-ok
  mv Cargo.toml.orig Cargo.toml
)
mkdir "$work/fork"
tar -C "$fork" --exclude=./target --exclude=./PATCHES.md -cf - . | tar -C "$work/fork" -xf -

cd "$work"
if ((names)); then
  (cd upstream && find . -type f | sed 's|^\./||' | LC_ALL=C sort) >upstream.list
  (cd fork && find . -type f | sed 's|^\./||' | LC_ALL=C sort) >fork.list
  {
    LC_ALL=C comm -13 upstream.list fork.list | sed 's/^/A /'
    LC_ALL=C comm -23 upstream.list fork.list | sed 's/^/D /'
    while IFS= read -r path; do
      cmp -s "upstream/$path" "fork/$path" || printf 'M %s\n' "$path"
    done < <(LC_ALL=C comm -12 upstream.list fork.list)
  } | LC_ALL=C sort -k2
else
  status=0
  diff -ruN upstream fork || status=$?
  # diff: 0 same, 1 different, 2 trouble.
  ((status <= 1))
fi

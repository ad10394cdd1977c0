#!/usr/bin/env bash
# soak.sh: runs chaos-backend under mixed traffic and guarded chaos cycles
# for a while, and fails if its RSS, open file descriptors or threads grow
# beyond what the chaos intended.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/soak.sh [--short] [--binary PATH] [DURATION]

Starts the release binary on a free loopback port and, for DURATION seconds
(default 600; --short: 50), sends every second a burst of probes (/health,
/ready), user traffic (GET /) and a scrape (/metrics), and every 10 s a
guarded chaos cycle: a 2 s CPU load at 200m, a 1 MiB leak (the previous
one released first), and a request the guardrails refuse. It records RSS, open file descriptors and threads
after a warm-up and again after the last cycle has settled, and fails if:
  RSS grew by more than the MiB leaked on purpose + 8 MiB,
  open fds grew by more than 4, or threads by more than 4.
Prints a table of the figures. Exit status: 0 pass, 1 fail, 2 bad usage.
USAGE
}

duration=600
binary=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --short) duration=50; shift ;;
    --binary) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; binary="$2"; shift 2 ;;
    *)
      [[ $1 =~ ^[0-9]+$ ]] || { echo "soak.sh: DURATION \"$1\" is not a whole number of seconds" >&2; exit 2; }
      duration="$1"; shift ;;
  esac
done
((duration >= 20)) || { echo "soak.sh: DURATION $duration is too short (at least 20 s)" >&2; exit 2; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z $binary ]]; then
  cargo build --release --locked --bin chaos-backend >&2
  binary=target/release/chaos-backend
fi

work=$(mktemp -d)
# Two slots: a leak holds one until it is released, the CPU cycle takes the other.
STATE_DIR="$work/state" PORT=0 PROBE_PORT=0 BIND_ADDRESS=127.0.0.1 CHAOS_COOLDOWN_SECONDS=5 MAX_CONCURRENT_CHAOS=2 \
  MAX_MEMORY_MB_READY=1048576 SHUTDOWN_DELAY_SECONDS=0 RUST_LOG=warn "$binary" 2>"$work/stderr" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# PORT=0 picks a free port; POD_STARTED says which.
listen=""
for _ in $(seq 1 100); do
  listen=$(grep -o '"listen":"[^"]*"' "$work/stderr" | head -n 1 | cut -d'"' -f4) || true
  [[ -z $listen ]] || break
  sleep 0.05
done
url="http://$listen"
curl -sf -o /dev/null "$url/ready" || { echo "soak.sh: the service did not start" >&2; cat "$work/stderr" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$pid/status"; }
fds() { find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }

burst() {
  # One curl, one keep-alive connection, 16 requests.
  curl -s -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
    -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
    "$url/health" "$url/ready" "$url/" "$url/" "$url/health" "$url/ready" "$url/" "$url/" \
    "$url/health" "$url/ready" "$url/" "$url/" "$url/health" "$url/ready" "$url/" "$url/metrics" || true
}

leaked_mb=0
requests=0
cycles=0
failures=0
cycle() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/load/cpu?duration=2&millicores=200")
  [[ $code == 202 ]] || failures=$((failures + 1))
  # Refused by the cooldown: the guard path is exercised too.
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/load/memory?mb=1")
  [[ $code == 429 ]] || failures=$((failures + 1))
  cycles=$((cycles + 1))
}
leak() {
  local code
  # The previous leak is released first (its slot with it), so the release
  # path is soaked too and at most one leak is held.
  if ((leaked_mb > 0)); then
    code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$url/load/memory")
    if [[ $code == 200 ]]; then leaked_mb=0; else failures=$((failures + 1)); fi
  fi
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/load/memory?mb=1")
  if [[ $code == 200 ]]; then leaked_mb=$((leaked_mb + 1)); else failures=$((failures + 1)); fi
}

# Warm-up: let the thread pools and allocator reach their working size.
for _ in 1 2 3 4 5; do burst; done
sleep 1
start_rss=$(rss_kib)
start_fds=$(fds)
start_threads=$(threads)
echo "soak: ${duration} s against $url (pid $pid)" >&2

end=$((SECONDS + duration))
tick=0
while ((SECONDS < end)); do
  burst
  requests=$((requests + 16))
  tick=$((tick + 1))
  if ((tick % 10 == 1)); then
    cycle
  elif ((tick % 10 == 6)); then
    leak
  fi
  sleep 1
done

# Settle: loads end, idle tiny_http pool threads exit (they time out after 5 s).
sleep 8
end_rss=$(rss_kib)
end_fds=$(fds)
end_threads=$(threads)
kill -0 "$pid" 2>/dev/null || { echo "soak.sh: the service died" >&2; exit 1; }

rss_growth_mb=$(((end_rss - start_rss) / 1024))
allowed_rss_mb=$((leaked_mb + 8))
verdict=pass
((rss_growth_mb <= allowed_rss_mb)) || verdict=fail
((end_fds - start_fds <= 4)) || verdict=fail
((end_threads - start_threads <= 4)) || verdict=fail
((failures == 0)) || verdict=fail

printf '| figure | start | end | allowed growth |\n|---|---|---|---|\n'
printf '| RSS (KiB) | %s | %s | %s MiB (leaked on purpose: %s MiB, + 8 MiB) |\n' "$start_rss" "$end_rss" "$allowed_rss_mb" "$leaked_mb"
printf '| open fds | %s | %s | 4 |\n' "$start_fds" "$end_fds"
printf '| threads | %s | %s | 4 |\n' "$start_threads" "$end_threads"
echo
echo "requests: $requests, chaos cycles: $cycles, leaks: $leaked_mb, unexpected answers: $failures"
echo "soak: $verdict"
[[ $verdict == pass ]]

#!/usr/bin/env bash
# compare-libc.sh: the measurement behind the amd64 image's libc. Builds the
# service for x86_64-unknown-linux-gnu (static) and x86_64-unknown-linux-musl
# and the tiny_http floor, then compares, round by round, the CPU time each
# spends per /health request and per 256 MiB leak.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/compare-libc.sh [--rounds N] [--seconds S]

Builds three static x86_64 binaries: the service with glibc (crt-static),
the service with musl (linked by rust-lld), and the bench/floor tiny_http
hello-world. Then, for each of N rounds (default 5), in turn:
  - wrk -t2 -c16 for S seconds (default 4) on /health of each binary, and
    the server's CPU time (utime + stime from /proc) per request served;
  - POST /load/memory?mb=256 on a fresh glibc and a fresh musl process:
    the server's CPU time and the wall time it reports.
CPU time per request does not depend on how busy the rest of the machine
is, which wall-clock throughput does. Prints each round, then the medians
and the musl/glibc ratios. Needs Linux x86_64, cargo, rustup, wrk and curl.
It measures; it never fails on a figure.
USAGE
}

rounds=5
seconds=4
while (($# > 0)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    *) echo "compare-libc.sh: unknown argument \"$1\"" >&2; usage >&2; exit 2 ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "compare-libc.sh: invalid --rounds \"$rounds\"" >&2; exit 2; }
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "compare-libc.sh: invalid --seconds \"$seconds\"" >&2; exit 2; }
for tool in cargo rustup wrk curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "compare-libc.sh: $tool is missing" >&2; exit 1; }
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${CARGO_TARGET_DIR:-target}"
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
echo "==> building glibc (static), musl and the floor" >&2
RUSTFLAGS='-C target-feature=+crt-static -C relocation-model=static' \
  cargo build --release --locked --target x86_64-unknown-linux-gnu --bin chaos-backend >&2
CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
  cargo build --release --locked --target x86_64-unknown-linux-musl --bin chaos-backend >&2
RUSTFLAGS='-C target-feature=+crt-static -C relocation-model=static' \
  cargo build --release --locked --target x86_64-unknown-linux-gnu --manifest-path bench/floor/Cargo.toml \
  --target-dir "$out/floor" >&2

declare -A binary=(
  [glibc]="$out/x86_64-unknown-linux-gnu/release/chaos-backend"
  [musl]="$out/x86_64-unknown-linux-musl/release/chaos-backend"
  [floor]="$out/floor/x86_64-unknown-linux-gnu/release/floor"
)
state="$(mktemp -d)"
pid=""
cleanup() {
  [[ -z $pid ]] || kill "$pid" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
hz="$(getconf CLK_TCK)"

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
start() {
  if [[ $1 == floor ]]; then
    "${binary[floor]}" "$port" >/dev/null 2>&1 &
  else
    PORT="$port" PROBE_PORT=0 BIND_ADDRESS=127.0.0.1 STATE_DIR="$state" MAX_MEMORY_MB_READY=1048576 \
      SHUTDOWN_DELAY_SECONDS=0 RUST_LOG=warn \
      "${binary[$1]}" 2>/dev/null &
  fi
  pid=$!
  local i
  for ((i = 0; i < 100; i++)); do
    curl -s -o /dev/null "http://127.0.0.1:$port/health" && return 0
    sleep 0.05
  done
  echo "compare-libc.sh: $1 did not start" >&2
  exit 1
}
stop() {
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A per_request=() leak_cpu=() leak_wall=()
for ((round = 1; round <= rounds; round++)); do
  line="round $round:"
  for kind in floor glibc musl; do
    start "$kind"
    t0="$(ticks "$pid")"
    n="$(wrk -t2 -c16 "-d${seconds}s" "http://127.0.0.1:$port/health" | awk '/requests in/ { print $1 }')"
    t1="$(ticks "$pid")"
    stop
    us="$(awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')"
    per_request[$kind]+="$us "
    line+=" $kind ${us} us/request ($n requests);"
    [[ $kind != floor ]] || continue
    start "$kind"
    t0="$(ticks "$pid")"
    wall="$(curl -s -X POST "http://127.0.0.1:$port/load/memory?mb=256" | sed 's/.*"seconds":\([0-9.e-]*\).*/\1/')"
    t1="$(ticks "$pid")"
    stop
    cpu="$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { printf "%.3f", (b - a) / hz }')"
    leak_cpu[$kind]+="$cpu "
    leak_wall[$kind]+="$wall "
    line+=" leak CPU ${cpu} s, wall ${wall} s;"
  done
  echo "$line"
done

m() { tr ' ' '\n' <<<"$1" | grep . | median; }
echo
echo "| median over $rounds rounds | glibc | musl | musl / glibc |"
echo "|---|---|---|---|"
g="$(m "${per_request[glibc]}")" u="$(m "${per_request[musl]}")"
echo "| server CPU per /health request (floor $(m "${per_request[floor]}") us) | $g us | $u us | $(awk -v a="$u" -v b="$g" 'BEGIN { printf "%.2f", a / b }') |"
g="$(m "${leak_cpu[glibc]}")" u="$(m "${leak_cpu[musl]}")"
echo "| server CPU per 256 MiB leak | $g s | $u s | $(awk -v a="$u" -v b="$g" 'BEGIN { printf "%.2f", a / b }') |"
g="$(m "${leak_wall[glibc]}")" u="$(m "${leak_wall[musl]}")"
echo "| 256 MiB leak, wall time the service reports | $g s | $u s | $(awk -v a="$u" -v b="$g" 'BEGIN { printf "%.2f", a / b }') |"

#!/usr/bin/env bash
# chaos-generator.sh: triggers one kind of fault again and again against a
# chaos-backend and measures, from outside, how long readiness takes to fail
# (detection) and to come back (recovery). Needs only bash >= 5, curl, awk
# and coreutils.
set -euo pipefail

readonly HEADER="iteration,type,triggered_at_ms,detected_s,recovered_s,outcome,detail"

usage() {
  cat <<'USAGE'
Usage: scripts/chaos-generator.sh [options]

Triggers a fault, then polls GET /ready until it is not 200 (detection) and
then until it is 200 again (recovery), ITERATIONS times, COOLDOWN seconds
apart. One CSV row is appended to the results file as soon as each iteration
ends, so an interrupted run loses nothing that finished.

Options:
  --url URL          service base URL (default http://localhost:8080)
  --type TYPE        cpu | memory | crash | disk | readiness | latency |
                     liveness (default cpu)
  --iterations N     iterations to run (default 20)
  --cooldown S       seconds to wait between iterations (default 10)
  --timeout S        limit of each phase, in seconds (default 60): waiting to
                     be ready before the trigger, waiting for detection, and
                     waiting for recovery
  --duration S       cpu, readiness, latency, liveness: the fault's duration
                     in seconds (default: the service's; 60 for readiness
                     and liveness, so raise --timeout or pass a shorter one)
  --millicores M     cpu: millicores instead of saturating every CPU
  --mb N             memory: MiB to leak per iteration (default: the service's);
                     disk: MiB to write (default: the service's, 96)
  --ms MS            latency: extra milliseconds per GET / (default: the
                     service's, 1000)
  --mode M           liveness: fail (500) or hang (no answer) (default fail)
  --poll-ms MS       how often /ready is polled (default 200)
  --probe-timeout S  timeout of each /ready poll (default 1, the kubelet's)
  --out FILE         results file (default recovery-results.csv)
  --token T          bearer token for the chaos endpoints (default: the
                     CHAOS_TOKEN environment variable, if set)
  -h, --help         this help

Types:
  cpu      POST /load/cpu: readiness fails while the load runs (unless the
           service has READY_FAIL_ON_CPU_STRESS=false) and recovers after it.
  memory   POST /load/memory: readiness fails once RSS passes the service's
           MAX_MEMORY_MB_READY. The leak is never released, so the pod only
           recovers if something restarts it (an OOM kill under a memory
           limit, in Kubernetes or `docker run --memory ... --restart`);
           otherwise the row is `timeout`, and the next iterations are
           `trigger-failed` because /ready is not 200 before their trigger.
           A leak also holds its guardrail slot until it is released, so
           below the threshold the next iteration is refused (429) until
           --timeout and fails.
  crash    POST /crash: the process aborts. Recovery needs a supervisor
           that restarts it: Kubernetes, `docker run --restart on-failure`,
           or podman. After recovery, crash_to_startup_seconds is read from
           /metrics into the row's detail.
  readiness
           POST /fault/readiness: /ready answers 503 for the fault's
           duration, then 200 again, with no restart.
  latency  POST /load/latency, then 10 GET / in the background: their held
           time pushes the p95 of GET / above the service's MAX_LATENCY_MS,
           so /ready fails at once; it recovers when they have aged out of
           LATENCY_WINDOW_SECONDS.
  liveness POST /fault/liveness: /health fails or hangs while /ready stays
           200, so only a supervisor that probes liveness (the kubelet)
           restarts the process; the row measures that restart as /ready
           sees it (detection within --timeout). Without one the row is
           `no-degradation`.
  disk     POST /load/disk: fills the pod's emptyDir past its sizeLimit; the
           kubelet evicts the pod within about 1 to 2 minutes (use
           --timeout 150). Give --url the URL of ONE pod (its IP:8080 from
           inside the cluster): detected_s is then the time until that pod
           stops answering, i.e. the eviction. The pod never comes back (its
           replacement is a new pod at another address), so the row ends as
           `timeout`; run one iteration. The time to a Ready replacement is
           NOT measured here: with two replicas the Service never becomes
           unreachable, and a kubectl port-forward dies with its pod. It is
           the `evict` row of scripts/validate-matrix.sh that measures it.
           Outside Kubernetes nothing evicts: the row is no-degradation.

Measurement:
  Times come from a monotonic clock with millisecond resolution: bash's
  EPOCHREALTIME (microseconds) for precision, checked against /proc/uptime
  (monotonic, 10 ms) so that a wall-clock step cannot bend a measurement.
  A poll's instant is when its request was sent. A refused connection or a
  poll timeout counts as "not ready": that is how a crash looks from outside.
  detected_s is from the trigger's response to the first /ready that is not
  200; recovered_s from that moment to the next 200.
  A 429 from the guardrails is waited out (Retry-After) and retried; the
  wait is counted in the row's detail, and gives up after --timeout.

CSV columns:
  iteration,type,triggered_at_ms,detected_s,recovered_s,outcome,detail
  triggered_at_ms is wall-clock Unix milliseconds of the trigger's response;
  outcome is recovered, no-degradation, timeout or trigger-failed; detail is
  key=value pairs separated by ';' (never a comma).

Exit status: 0 after all iterations, 130 when interrupted (the summary of
what finished is printed, the file stays valid), 2 for bad options.
USAGE
}

die_usage() {
  echo "chaos-generator.sh: $1" >&2
  echo "Try --help." >&2
  exit 2
}

url="http://localhost:8080"
type="cpu"
iterations=20
cooldown=10
timeout=60
duration=""
millicores=""
mb=""
ms=""
mode=""
poll_ms=200
probe_timeout=1
out="recovery-results.csv"
token="${CHAOS_TOKEN:-}"

need_value() {
  [[ $# -ge 2 && -n $2 ]] || die_usage "$1 needs a value"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --url) need_value "$@"; url="${2%/}"; shift 2 ;;
    --type) need_value "$@"; type="$2"; shift 2 ;;
    --iterations) need_value "$@"; iterations="$2"; shift 2 ;;
    --cooldown) need_value "$@"; cooldown="$2"; shift 2 ;;
    --timeout) need_value "$@"; timeout="$2"; shift 2 ;;
    --duration) need_value "$@"; duration="$2"; shift 2 ;;
    --millicores) need_value "$@"; millicores="$2"; shift 2 ;;
    --mb) need_value "$@"; mb="$2"; shift 2 ;;
    --ms) need_value "$@"; ms="$2"; shift 2 ;;
    --mode) need_value "$@"; mode="$2"; shift 2 ;;
    --poll-ms) need_value "$@"; poll_ms="$2"; shift 2 ;;
    --probe-timeout) need_value "$@"; probe_timeout="$2"; shift 2 ;;
    --out) need_value "$@"; out="$2"; shift 2 ;;
    --token) need_value "$@"; token="$2"; shift 2 ;;
    *) die_usage "unknown option \"$1\"" ;;
  esac
done

whole() { # name value min
  if ! [[ $2 =~ ^[0-9]+$ ]] || ((10#$2 < $3)); then
    die_usage "$1 \"$2\": expected a whole number >= $3"
  fi
}
case "$type" in
  cpu | memory | crash | disk | readiness | latency | liveness) ;;
  *) die_usage "--type \"$type\": expected cpu, memory, crash, disk, readiness, latency or liveness" ;;
esac
whole --iterations "$iterations" 1
whole --cooldown "$cooldown" 0
whole --timeout "$timeout" 1
whole --poll-ms "$poll_ms" 10
whole --probe-timeout "$probe_timeout" 1
[[ -z $duration ]] || whole --duration "$duration" 1
[[ -z $millicores ]] || whole --millicores "$millicores" 1
[[ -z $mb ]] || whole --mb "$mb" 1
[[ -z $ms ]] || whole --ms "$ms" 1
case "$mode" in "" | fail | hang) ;; *) die_usage "--mode \"$mode\": expected fail or hang" ;; esac
[[ $type == cpu || -z $millicores ]] || die_usage "--millicores is for --type cpu"
[[ $type != memory && $type != crash && $type != disk || -z $duration ]] || die_usage "--duration is not for --type $type"
[[ $type == memory || $type == disk || -z $mb ]] || die_usage "--mb is for --type memory or disk"
[[ $type == latency || -z $ms ]] || die_usage "--ms is for --type latency"
[[ $type == liveness || -z $mode ]] || die_usage "--mode is for --type liveness"
[[ -n ${EPOCHREALTIME:-} ]] || { echo "chaos-generator.sh: needs bash >= 5 (EPOCHREALTIME)" >&2; exit 2; }
command -v curl >/dev/null || { echo "chaos-generator.sh: needs curl" >&2; exit 2; }

if [[ -s $out ]]; then
  IFS= read -r first_line <"$out" || true
  [[ $first_line == "$HEADER" ]] || die_usage "--out \"$out\" exists with another header; expected: $HEADER"
else
  printf '%s\n' "$HEADER" >>"$out"
fi

work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

# --- clock ------------------------------------------------------------------
# NOW_MS: monotonic milliseconds. Steps come from EPOCHREALTIME (microsecond
# precision); when it disagrees with /proc/uptime (monotonic, 10 ms) by more
# than 50 ms, the wall clock was stepped and the uptime step is used instead.
NOW_MS=0
CLOCK_STEPS=0
last_rt_us=""
last_up_ms=""

realtime_us() { local t=$EPOCHREALTIME; REPLY=$((10#${t/[.,]/})); }
uptime_ms() {
  local up _
  if [[ -r /proc/uptime ]] && read -r up _ </proc/uptime; then
    REPLY=$((10#${up/./} * 10))
  else
    REPLY=""
  fi
}

tick() {
  realtime_us
  local rt=$REPLY
  uptime_ms
  local up=$REPLY
  if [[ -n $last_rt_us ]]; then
    local step=$(((rt - last_rt_us) / 1000))
    if [[ -n $up && -n $last_up_ms ]]; then
      local up_step=$((up - last_up_ms))
      local diff=$((step - up_step))
      if ((step < 0 || diff > 50 || diff < -50)); then
        step=$up_step
        CLOCK_STEPS=$((CLOCK_STEPS + 1))
      fi
    elif ((step < 0)); then
      step=0
      CLOCK_STEPS=$((CLOCK_STEPS + 1))
    fi
    NOW_MS=$((NOW_MS + step))
  fi
  last_rt_us=$rt
  last_up_ms=$up
}

wall_ms() { local t=$EPOCHREALTIME; REPLY=$((10#${t/[.,]/} / 1000)); }

seconds() { # milliseconds -> "1.234"
  printf -v REPLY '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
}

# Sleeps in the background so a trapped signal interrupts the wait at once.
nap_ms() {
  (($1 > 0)) || return 0
  local s
  printf -v s '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
  sleep "$s" &
  wait $! || true
}

# --- HTTP -------------------------------------------------------------------
# probe: sets PROBE_CODE (000 when refused or timed out) and PROBE_AT (NOW_MS
# when the request was sent).
probe() {
  tick
  PROBE_AT=$NOW_MS
  PROBE_CODE=$(curl -s -o /dev/null -w '%{http_code}' --connect-timeout "$probe_timeout" \
    --max-time "$probe_timeout" "$url/ready" 2>/dev/null) || true
  [[ $PROBE_CODE =~ ^[0-9]{3}$ ]] || PROBE_CODE=000
}

# Polls until /ready's code is (want=200) or is not (want=down) 200, or until
# DEADLINE (NOW_MS). Returns 0 when seen, 1 on deadline; PROBE_AT is the
# instant of the deciding poll.
poll_until() {
  local want=$1 deadline=$2
  while :; do
    probe
    if [[ $want == up && $PROBE_CODE == 200 ]] || [[ $want == down && $PROBE_CODE != 200 ]]; then
      return 0
    fi
    tick
    ((NOW_MS < deadline)) || return 1
    local left=$((PROBE_AT + poll_ms - NOW_MS))
    nap_ms "$left"
  done
}

trigger_target() {
  local path q=()
  [[ -z $duration ]] || q+=("duration=$duration")
  case "$type" in
    cpu)
      path=/load/cpu
      [[ -z $millicores ]] || q+=("millicores=$millicores")
      ;;
    memory)
      path=/load/memory
      [[ -z $mb ]] || q+=("mb=$mb")
      ;;
    crash) path=/crash ;;
    readiness) path=/fault/readiness ;;
    latency)
      path=/load/latency
      [[ -z $ms ]] || q+=("ms=$ms")
      ;;
    liveness)
      path=/fault/liveness
      [[ -z $mode ]] || q+=("mode=$mode")
      ;;
    disk)
      path=/load/disk
      [[ -z $mb ]] || q+=("mb=$mb")
      ;;
  esac
  local IFS='&'
  if ((${#q[@]})); then REPLY="$path?${q[*]}"; else REPLY="$path"; fi
}

# The latency fault slows GET / only: user traffic is what the readiness p95
# sees. Ten requests in the background, each bounded by curl's --max-time.
slow_traffic=()
send_slow_traffic() {
  local i
  for ((i = 0; i < 10; i++)); do
    curl -s -o /dev/null --max-time 70 "$url/" 2>/dev/null &
    slow_traffic+=("$!")
  done
}
wait_slow_traffic() {
  ((${#slow_traffic[@]} == 0)) || wait "${slow_traffic[@]}" 2>/dev/null || true
  slow_traffic=()
}

# trigger: POSTs the fault, waiting out 429s. Sets TRIGGER_CODE, TRIGGER_WAITED
# (seconds spent on 429s) and TRIGGER_ERROR (text for a failed trigger).
trigger() {
  trigger_target
  local target=$REPLY
  TRIGGER_WAITED=0
  TRIGGER_ERROR=""
  tick
  local give_up=$((NOW_MS + timeout * 1000))
  # The token goes through a header file, so it never shows in `ps`.
  local auth=()
  if [[ -n $token ]]; then
    printf 'Authorization: Bearer %s\n' "$token" >"$work/auth"
    auth=(-H "@$work/auth")
  fi
  while :; do
    TRIGGER_CODE=$(curl -s -X POST "${auth[@]}" -D "$work/headers" -o "$work/body" -w '%{http_code}' \
      --connect-timeout 5 --max-time 30 "$url$target" 2>/dev/null) || true
    [[ $TRIGGER_CODE =~ ^[0-9]{3}$ ]] || TRIGGER_CODE=000
    if [[ $TRIGGER_CODE != 429 ]]; then
      break
    fi
    local retry
    retry=$(awk -F': *' 'tolower($1) == "retry-after" { gsub(/\r/, "", $2); print $2 }' "$work/headers")
    [[ $retry =~ ^[0-9]+$ ]] || retry=1
    tick
    if ((NOW_MS + retry * 1000 > give_up)); then
      TRIGGER_ERROR="guardrail still refusing after ${TRIGGER_WAITED} s (Retry-After ${retry} s exceeds --timeout)"
      return
    fi
    echo "  429 from the guardrails: waiting ${retry} s" >&2
    nap_ms $((retry * 1000))
    TRIGGER_WAITED=$((TRIGGER_WAITED + retry))
  done
  case "$TRIGGER_CODE" in
    2??) ;;
    000) TRIGGER_ERROR="no answer from $url$target" ;;
    *)
      local msg
      msg=$(tr -d '\r\n' <"$work/body" | head -c 200)
      TRIGGER_ERROR="HTTP $TRIGGER_CODE: $msg"
      ;;
  esac
}

# The crash_to_startup_seconds of the running instance (its one observation).
crash_to_startup() {
  curl -s --max-time 5 "$url/metrics" 2>/dev/null |
    awk '$1 == "crash_to_startup_seconds_count" { n = $2 } $1 == "crash_to_startup_seconds_sum" { s = $2 }
         END { if (n == 1) printf "%.3f", s; else if (n > 1) printf "%.3f/%d", s, n }'
}

# --- results ----------------------------------------------------------------
done_count=0
recovered_count=0
recovered_sum_ms=0
declare -A outcome_count=()

clean_detail() { # no commas, quotes or line breaks in the detail column
  local d=${1//,/;}
  d=${d//\"/\'}
  d=${d//$'\n'/ }
  REPLY=${d//$'\r'/}
}

record() { # iteration triggered_at_ms detected_ms recovered_ms outcome detail
  local det="" rec=""
  [[ -z $3 ]] || { seconds "$3"; det=$REPLY; }
  [[ -z $4 ]] || { seconds "$4"; rec=$REPLY; }
  clean_detail "$6"
  printf '%s,%s,%s,%s,%s,%s,%s\n' "$1" "$type" "$2" "$det" "$rec" "$5" "$REPLY" >>"$out"
  done_count=$((done_count + 1))
  outcome_count[$5]=$((${outcome_count[$5]:-0} + 1))
  if [[ $5 == recovered ]]; then
    recovered_count=$((recovered_count + 1))
    recovered_sum_ms=$((recovered_sum_ms + $4))
  fi
  local line="[$1/$iterations] $type: $5"
  [[ -z $det ]] || line+=", detected in $det s"
  [[ -z $rec ]] || line+=", recovered in $rec s"
  [[ -z $REPLY ]] || line+=" ($REPLY)"
  echo "$line"
}

summary() {
  local mean="n/a"
  if ((recovered_count > 0)); then
    seconds $((recovered_sum_ms / recovered_count))
    mean="$REPLY s"
  fi
  local counts="" k
  for k in recovered no-degradation timeout trigger-failed; do
    counts+=" $k=${outcome_count[$k]:-0}"
  done
  echo "summary: $done_count of $iterations iterations finished, $recovered_count recovered, mean recovery $mean;$counts"
  echo "results: $out"
  ((CLOCK_STEPS == 0)) || echo "note: the wall clock stepped $CLOCK_STEPS time(s); /proc/uptime was used across the steps"
}

interrupted() {
  # A background sleep would hold our stdout open after we exit.
  local pids
  mapfile -t pids < <(jobs -p)
  ((${#pids[@]} == 0)) || kill "${pids[@]}" 2>/dev/null || true
  echo
  echo "interrupted: the iteration in progress is not recorded"
  summary
  exit 130
}
trap interrupted INT TERM

# --- main loop --------------------------------------------------------------
timeout_ms=$((timeout * 1000))
tick
for ((i = 1; i <= iterations; i++)); do
  wait_slow_traffic
  if ((i > 1)); then
    nap_ms $((cooldown * 1000))
  fi
  detail=""
  tick
  if ! poll_until up $((NOW_MS + timeout_ms)); then
    wall_ms
    record "$i" "$REPLY" "" "" trigger-failed "/ready was $PROBE_CODE (not 200) for --timeout before the trigger"
    continue
  fi
  trigger
  tick
  triggered=$NOW_MS
  wall_ms
  triggered_wall=$REPLY
  ((TRIGGER_WAITED == 0)) || detail="guardrail_wait_s=$TRIGGER_WAITED"
  if [[ -n $TRIGGER_ERROR ]]; then
    record "$i" "$triggered_wall" "" "" trigger-failed "${detail:+$detail;}$TRIGGER_ERROR"
    continue
  fi
  [[ $type != latency ]] || send_slow_traffic
  # How long a fault can take to show: a CPU load, a readiness or latency
  # fault fails readiness while it runs, a leak at once, a crash within the
  # abort; a liveness fault only through a restart: --timeout.
  detect_deadline=$((triggered + timeout_ms))
  if [[ $type == cpu || $type == readiness || $type == latency ]]; then
    load_ms=$(awk -F'"duration_seconds":' 'NF > 1 { split($2, a, /[,}]/); print a[1] * 1000 }' "$work/body")
    if [[ $load_ms =~ ^[0-9]+$ ]] && ((triggered + load_ms + 2000 < detect_deadline)); then
      detect_deadline=$((triggered + load_ms + 2000))
    fi
  elif [[ $type == memory ]] && ((triggered + 2000 < detect_deadline)); then
    detect_deadline=$((triggered + 2000))
  fi
  if ! poll_until down "$detect_deadline"; then
    record "$i" "$triggered_wall" "" "" no-degradation "${detail:+$detail;}/ready stayed 200"
    continue
  fi
  detected_at=$PROBE_AT
  detected_ms=$((detected_at - triggered))
  ((detected_ms >= 0)) || detected_ms=0
  detail="${detail:+$detail;}first_down_code=$PROBE_CODE"
  if ! poll_until up $((detected_at + timeout_ms)); then
    record "$i" "$triggered_wall" "$detected_ms" "" timeout "$detail;still_code=$PROBE_CODE"
    continue
  fi
  recovered_ms=$((PROBE_AT - detected_at))
  if [[ $type == crash ]]; then
    c2s=$(crash_to_startup)
    detail+=";crash_to_startup_s=${c2s:-unknown}"
  fi
  record "$i" "$triggered_wall" "$detected_ms" "$recovered_ms" recovered "$detail"
done
wait_slow_traffic
summary

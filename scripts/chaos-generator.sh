#!/usr/bin/env bash
# chaos-generator.sh: triggers one kind of fault again and again against a
# chaos-backend and measures, from outside, how long readiness takes to fail
# (detection), how long it stays failed while the fault lasts (degraded), and
# how long it takes to be ready again once the fault has ended (recovery).
# Needs only bash >= 5, curl, awk and coreutils.
set -euo pipefail

readonly HEADER="iteration,type,triggered_at_ms,detected_s,degraded_s,recovered_s,outcome,detail"
# The header of files written before degraded_s existed (their recovered_s
# was first failure to ready, today's degraded_s + recovered_s).
readonly OLD_HEADER="iteration,type,triggered_at_ms,detected_s,recovered_s,outcome,detail"

usage() {
  cat <<'USAGE'
Usage: scripts/chaos-generator.sh [options]

Triggers a fault, then polls GET /ready until it is not 200 (detection),
works out when the fault ended, and polls until /ready is 200 again
(recovery), ITERATIONS times. One CSV row is appended to the results file as
soon as each iteration ends, so an interrupted run loses nothing that
finished. On exit, Ctrl-C or TERM it stops every fault it started that may
still run (DELETE), then exits.

Options:
  --url URL          service base URL (default http://localhost:8080)
  --type TYPE        cpu | memory | crash | disk | readiness | latency |
                     liveness | errors | crashloop | startup (default cpu)
  --iterations N     iterations to run (default 20)
  --cooldown S       extra seconds to wait between iterations (default 0:
                     the service's own cooldown is waited out anyway, see
                     Guardrails below)
  --timeout S        limit of each phase, in seconds (default 60): waiting to
                     be ready before the trigger, waiting out 429s, waiting
                     for detection, and waiting for recovery after the
                     fault's end
  --duration S       cpu, readiness, latency, liveness, errors: the fault's
                     duration in seconds (default: the service's; 60 for
                     readiness, liveness and errors, 10 for cpu and latency)
  --millicores M     cpu: millicores instead of saturating every CPU
  --mb N             memory: MiB to leak (default: 150% of the container's
                     memory limit, or the service's MEMORY_MB where it has
                     none); disk: MiB to write (default: the service's, 96)
  --ramp S           memory: grow the leak over S seconds (default 20)
  --hold S           memory: the service releases the leak S seconds after
                     its ramp, if nothing killed it first (default 10)
  --ms MS            latency: extra milliseconds per GET / (default: the
                     service's, 1000)
  --mode M           liveness: fail (500) or hang (no answer) (default fail);
                     errors: status, reset, close or stall (default status)
  --percent P        errors: percent of GET / that fail (default: the
                     service's, 100)
  --code C           errors with --mode status: 500, 502, 503, 504 or 429
                     (default: the service's, 503)
  --starts N         crashloop: starts that fail (default 3); startup: slow
                     starts (default 1)
  --seconds S        startup: how long each slow start holds /health and
                     /ready (default 5)
  --poll-ms MS       how often /ready is polled (default 200)
  --probe-timeout S  timeout of each poll (default 1, the kubelet's)
  --out FILE         results file (default recovery-results.csv)
  --token T          bearer token for the chaos endpoints (default: the
                     CHAOS_TOKEN environment variable, if set)
  -h, --help         this help

Types:
  cpu      POST /load/cpu: readiness fails while the load runs (unless the
           service has READY_FAIL_ON_CPU_STRESS=false); the fault ends with
           its duration.
  memory   POST /load/memory?percent_of_limit=150&ramp=20&hold=10: the leak
           grows over the ramp. In a container with a memory limit and a
           restart policy (Kubernetes, `docker run --memory 128m --restart
           on-failure`) /ready fails once RSS passes MAX_MEMORY_MB_READY,
           the kernel OOM-kills the process before the ramp ends, and the
           engine restarts it: the fault ends with the death (the first poll
           with no answer), and the row is recovered with restart=yes. With
           no memory limit the service's MEMORY_MB is leaked instead, and
           the service releases it after --hold: below MAX_MEMORY_MB_READY
           the row is no-degradation. A leak holds its guardrail slot until
           it is released, so the next trigger waits (Retry-After).
           Under Docker a container that ran less than 10 s is restarted
           after twice the last delay (100 ms, 200 ms, ... up to a minute):
           the default ramp keeps each life longer than that.
  crash    POST /crash: the process aborts; the fault ends at the trigger's
           answer. Recovery needs a supervisor that restarts it:
           Kubernetes, `docker run --restart on-failure`, or podman. The
           row's detail carries the new instance's crash_to_startup_s.
  readiness
           POST /fault/readiness: /ready answers 503 for the fault's
           duration, then 200 again, with no restart.
  latency  POST /load/latency, then 10 GET / in the background: their held
           time pushes the p95 of GET / above the service's MAX_LATENCY_MS,
           so /ready fails at once; the fault ends with its duration, and
           /ready recovers once the slow answers have aged out of
           LATENCY_WINDOW_SECONDS: that wait is the row's recovered_s.
  liveness POST /fault/liveness: /health fails or hangs while /ready stays
           200. Detection is the first /health that is not 200. A
           supervisor that probes liveness (the kubelet) restarts the
           process: the fault ends with its death (the first /ready with no
           answer), and recovery is the new process's /health and /ready
           200, with restart=yes (the start time in /metrics changed).
           Without one the fault ends with its duration and the row says
           restart=no.
  errors   POST /fault/errors: a share of GET / fails (a status, a reset, a
           close or a stall) while /ready stays 200 (a stall is the
           exception: it counts as slow in the readiness p95). The
           generator watches GET /, what users get: detection is the first
           GET / that is not 200 (000: reset, closed or stalled past
           --probe-timeout); it keeps polling GET / until the fault's end
           and counts what failed (detail get_failed=K/N, first_down_code);
           recovery is the first GET / 200 after the fault's end.
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
  crashloop
           POST /fault/crashloop?starts=N: the process crashes, and its next
           N starts exit with code 75 before they listen; the start after
           them serves. Needs a supervisor that restarts it (as crash).
           The fault ends at the trigger's answer; recovered_s covers the
           supervisor's back-offs (Kubernetes: 10 + 20 + 40 s for N = 3, so
           use --timeout 150; Docker: 100 ms doubling). The row's detail
           carries the service's own count and time (crashloop_starts,
           crashloop_s: first failing start to the start that served).
           The back-off gaps themselves are the `crashloop` row of
           scripts/validate-matrix.sh.
  startup  POST /fault/slowstart?seconds=S&starts=N, then POST /crash: the
           next start holds /health and /ready at 503 for S seconds. Needs a
           supervisor. The fault ends at the crash's answer; recovered_s is
           the restart plus the hold (below the startup probe's budget; over
           it the kubelet restarts the container once more: the
           `startup` row of scripts/validate-matrix.sh tells the two apart).
           The row's detail carries slow_start_s=S.

Measurement:
  Times come from a monotonic clock with millisecond resolution: bash's
  EPOCHREALTIME (microseconds) for precision, checked against /proc/uptime
  (monotonic, 10 ms) so that a wall-clock step cannot bend a measurement.
  A poll's instant is when its request was sent. A refused connection or a
  poll timeout counts as "not ready": that is how a crash looks from outside.
  The fault's end: its planned end (the trigger's answer plus its duration,
  or a leak's ramp plus hold), or the process's death when it died first
  (the first poll with no answer), or the trigger's answer for a crash.

Guardrails:
  A 429 is waited out for its Retry-After, with a line saying so; a wait of
  more than --timeout is a trigger-failed row. A 429 of the service's
  cooldown (CHAOS_COOLDOWN_SECONDS, 60 s by default) also tells how long the
  cooldown is: later iterations wait for it before their trigger instead of
  being refused again. Every wait prints a progress line to stderr at least
  every 5 s.

CSV columns:
  iteration,type,triggered_at_ms,detected_s,degraded_s,recovered_s,outcome,detail
  triggered_at_ms  wall-clock Unix milliseconds of the trigger's answer
  detected_s       trigger's answer to the first failing poll
  degraded_s       that first failure to the fault's end
  recovered_s      the fault's end to the next 200 (before degraded_s
                   existed, recovered_s was first failure to 200: files
                   with that older header are not appended to)
  outcome          recovered, no-degradation, timeout or trigger-failed
  detail           key=value pairs separated by ';' (never a comma):
                   first_down_code (000 = no answer), restart (yes/no),
                   guardrail_wait_s, crash_to_startup_s, stopped (the
                   generator stopped a fault that outlived its row), or
                   the error

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
cooldown=0
timeout=60
duration=""
millicores=""
mb=""
ramp=""
hold=""
ms=""
mode=""
starts=""
seconds=""
percent=""
code=""
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
    --ramp) need_value "$@"; ramp="$2"; shift 2 ;;
    --hold) need_value "$@"; hold="$2"; shift 2 ;;
    --ms) need_value "$@"; ms="$2"; shift 2 ;;
    --mode) need_value "$@"; mode="$2"; shift 2 ;;
    --starts) need_value "$@"; starts="$2"; shift 2 ;;
    --seconds) need_value "$@"; seconds="$2"; shift 2 ;;
    --percent) need_value "$@"; percent="$2"; shift 2 ;;
    --code) need_value "$@"; code="$2"; shift 2 ;;
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
  cpu | memory | crash | disk | readiness | latency | liveness | errors | crashloop | startup) ;;
  *) die_usage "--type \"$type\": expected cpu, memory, crash, disk, readiness, latency, liveness, errors, crashloop or startup" ;;
esac
whole --iterations "$iterations" 1
whole --cooldown "$cooldown" 0
whole --timeout "$timeout" 1
whole --poll-ms "$poll_ms" 10
whole --probe-timeout "$probe_timeout" 1
[[ -z $duration ]] || whole --duration "$duration" 1
[[ -z $millicores ]] || whole --millicores "$millicores" 1
[[ -z $mb ]] || whole --mb "$mb" 1
[[ -z $ramp ]] || whole --ramp "$ramp" 1
[[ -z $hold ]] || whole --hold "$hold" 1
[[ -z $ms ]] || whole --ms "$ms" 1
[[ -z $starts ]] || whole --starts "$starts" 1
[[ -z $seconds ]] || whole --seconds "$seconds" 1
if [[ $type == errors ]]; then
  case "$mode" in "" | status | reset | close | stall) ;; *) die_usage "--mode \"$mode\": expected status, reset, close or stall" ;; esac
else
  case "$mode" in "" | fail | hang) ;; *) die_usage "--mode \"$mode\": expected fail or hang" ;; esac
fi
[[ -z $percent ]] || { whole --percent "$percent" 1; ((10#$percent <= 100)) || die_usage "--percent \"$percent\": expected 1 to 100"; }
case "$code" in "" | 500 | 502 | 503 | 504 | 429) ;; *) die_usage "--code \"$code\": expected 500, 502, 503, 504 or 429" ;; esac
[[ $type == errors || (-z $percent && -z $code) ]] || die_usage "--percent and --code are for --type errors"
[[ -z $code || $mode == "" || $mode == status ]] || die_usage "--code is for --mode status"
[[ $type == cpu || -z $millicores ]] || die_usage "--millicores is for --type cpu"
[[ $type != @(memory|crash|disk|crashloop|startup) || -z $duration ]] || die_usage "--duration is not for --type $type"
[[ $type == @(crashloop|startup) || -z $starts ]] || die_usage "--starts is for --type crashloop or startup"
[[ $type == startup || -z $seconds ]] || die_usage "--seconds is for --type startup"
[[ $type == memory || $type == disk || -z $mb ]] || die_usage "--mb is for --type memory or disk"
[[ $type == memory || (-z $ramp && -z $hold) ]] || die_usage "--ramp and --hold are for --type memory"
[[ $type == latency || -z $ms ]] || die_usage "--ms is for --type latency"
[[ $type == liveness || $type == errors || -z $mode ]] || die_usage "--mode is for --type liveness or errors"
[[ -n ${EPOCHREALTIME:-} ]] || { echo "chaos-generator.sh: needs bash >= 5 (EPOCHREALTIME)" >&2; exit 2; }
command -v curl >/dev/null || { echo "chaos-generator.sh: needs curl" >&2; exit 2; }
ramp=${ramp:-20}
hold=${hold:-10}

if [[ -s $out ]]; then
  IFS= read -r first_line <"$out" || true
  if [[ $first_line == "$OLD_HEADER" ]]; then
    die_usage "--out \"$out\" was written by an older chaos-generator.sh (its recovered_s is first failure to ready, without degraded_s); use another file"
  fi
  [[ $first_line == "$HEADER" ]] || die_usage "--out \"$out\" exists with another header; expected: $HEADER"
else
  printf '%s\n' "$HEADER" >>"$out"
fi

work=$(mktemp -d)

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

# How often any wait says that it is still waiting.
readonly PROGRESS_MS=5000

# wait_ms MS WHAT: sleeps MS, printing to stderr at least every 5 s how
# long it has waited for WHAT.
wait_ms() {
  local total=$1 what=$2 waited=0 step
  while ((waited < total)); do
    step=$((total - waited))
    ((step <= PROGRESS_MS)) || step=$PROGRESS_MS
    nap_ms "$step"
    waited=$((waited + step))
    if ((waited < total)); then
      seconds "$waited"
      local w=$REPLY
      seconds "$total"
      echo "  ... waiting for $what: $w of $REPLY s" >&2
    fi
  done
}

# --- HTTP -------------------------------------------------------------------
# The token goes through a header file, so it never shows in `ps`.
auth=()
if [[ -n $token ]]; then
  printf 'Authorization: Bearer %s\n' "$token" >"$work/auth"
  auth=(-H "@$work/auth")
fi

# get PATH: sets CODE (000 when refused or timed out) of GET PATH.
get_code() {
  CODE=$(curl -s -o /dev/null -w '%{http_code}' --connect-timeout "$probe_timeout" \
    --max-time "$probe_timeout" "$url$1" 2>/dev/null) || true
  [[ $CODE =~ ^[0-9]{3}$ ]] || CODE=000
}

# probe: sets PROBE_CODE (the watched answer: /ready, or for liveness
# /health until detection and then the worse of both, or for errors GET /),
# READY_CODE, and PROBE_AT (NOW_MS when the poll was sent).
watch_health=0
watch_root=0
probe() {
  tick
  PROBE_AT=$NOW_MS
  get_code /ready
  READY_CODE=$CODE
  PROBE_CODE=$CODE
  if ((watch_root)); then
    get_code /
    PROBE_CODE=$CODE
  fi
  if ((watch_health)); then
    get_code /health
    HEALTH_CODE=$CODE
    if [[ $HEALTH_CODE != 200 ]]; then PROBE_CODE=$HEALTH_CODE; fi
  fi
}

# Deaths seen while polling for recovery: the first poll with no answer
# from /ready, and the first /ready that was not 200.
DIED_AT=""
READY_DOWN_AT=""
note_death() {
  [[ -n $READY_DOWN_AT || $READY_CODE == 200 ]] || READY_DOWN_AT=$PROBE_AT
  [[ -n $DIED_AT || $READY_CODE != 000 ]] || DIED_AT=$PROBE_AT
}

# Polls until the watched code is (want=up) or is not (want=down) 200, or
# until DEADLINE (NOW_MS). Returns 0 when seen, 1 on deadline; PROBE_AT is
# the instant of the deciding poll, PREVIOUS_AT the one before it. WHAT
# names the wait in progress lines.
PREVIOUS_AT=""
poll_until() {
  local want=$1 deadline=$2 what=$3 since=$NOW_MS said=$NOW_MS
  PREVIOUS_AT=""
  while :; do
    [[ -z ${PROBE_AT:-} ]] || PREVIOUS_AT=$PROBE_AT
    probe
    [[ $want != up ]] || note_death
    if [[ $want == up && $PROBE_CODE == 200 ]] || [[ $want == down && $PROBE_CODE != 200 ]]; then
      return 0
    fi
    tick
    ((NOW_MS < deadline)) || return 1
    if ((NOW_MS - said >= PROGRESS_MS)); then
      said=$NOW_MS
      seconds $((NOW_MS - since))
      local so_far=$REPLY
      seconds $((deadline - since))
      echo "  ... waiting for $what: $so_far s so far (up to $REPLY s; last answer $PROBE_CODE)" >&2
    fi
    local left=$((PROBE_AT + poll_ms - NOW_MS))
    nap_ms "$left"
  done
}

# count_errors_until END: polls GET / (with /ready) until END (NOW_MS), the
# errors fault's planned end, counting the GET / that were sent and those
# that failed (not 200), the detecting poll included. Sets ERRORS_SENT and
# ERRORS_FAILED.
count_errors_until() {
  ERRORS_SENT=1 ERRORS_FAILED=1
  local said=$NOW_MS left
  while :; do
    left=$((PROBE_AT + poll_ms - NOW_MS))
    nap_ms "$left"
    tick
    ((NOW_MS < $1)) || return 0
    probe
    ERRORS_SENT=$((ERRORS_SENT + 1))
    [[ $PROBE_CODE == 200 ]] || ERRORS_FAILED=$((ERRORS_FAILED + 1))
    if ((NOW_MS - said >= PROGRESS_MS)); then
      said=$NOW_MS
      echo "  ... counting GET / until the fault's end: $ERRORS_FAILED of $ERRORS_SENT failed" >&2
    fi
  done
}

# The instance's start time, its crash_to_startup_seconds count and sum, its
# crashloop_starts_total and its crashloop_to_healthy_start_seconds sum,
# from /metrics ("" when it does not answer).
instance() {
  REPLY=$(curl -s --max-time 5 "$url/metrics" 2>/dev/null |
    awk '$1 == "process_start_time_seconds" { t = $2 }
         $1 == "crash_to_startup_seconds_count" { n = $2 }
         $1 == "crash_to_startup_seconds_sum" { s = $2 }
         $1 == "crashloop_starts_total" { l = $2 }
         $1 == "crashloop_to_healthy_start_seconds_sum" { ls = $2 }
         END { if (t != "") printf "%s %s %s %s %s", t, n + 0, s + 0, l + 0, ls + 0 }') || REPLY=""
}

# The crash loop between two instance() readings: "starts seconds", or "".
crash_loop() { # before after
  local b a
  read -r -a b <<<"$1"
  read -r -a a <<<"$2"
  ((${#b[@]} == 5 && ${#a[@]} == 5)) || { REPLY=""; return; }
  REPLY=$(awk -v n0="${b[3]}" -v s0="${b[4]}" -v n1="${a[3]}" -v s1="${a[4]}" \
    'BEGIN { printf "%d %.3f", n1 - n0, s1 - s0 }')
}

# The crash_to_startup_seconds observed between two instance() readings.
crash_to_startup() { # before after
  local b a
  read -r -a b <<<"$1"
  read -r -a a <<<"$2"
  ((${#b[@]} >= 3 && ${#a[@]} >= 3)) || { REPLY=""; return; }
  REPLY=$(awk -v n0="${b[1]}" -v s0="${b[2]}" -v n1="${a[1]}" -v s1="${a[2]}" \
    'BEGIN { if (n1 > n0) printf "%.3f", (s1 - s0) / (n1 - n0) }')
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
      if [[ -n $mb ]]; then
        q+=("mb=$mb")
      elif [[ $memory_size == limit ]]; then
        q+=("percent_of_limit=150")
      fi
      q+=("ramp=$ramp" "hold=$hold")
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
    errors)
      path=/fault/errors
      [[ -z $percent ]] || q+=("percent=$percent")
      [[ -z $mode ]] || q+=("mode=$mode")
      [[ -z $code ]] || q+=("code=$code")
      ;;
    disk)
      path=/load/disk
      [[ -z $mb ]] || q+=("mb=$mb")
      ;;
    crashloop) path=/fault/crashloop q+=("starts=${starts:-3}") ;;
    startup) path=/fault/slowstart q+=("seconds=${seconds:-5}" "starts=${starts:-1}") ;;
  esac
  local IFS='&'
  if ((${#q[@]})); then REPLY="$path?${q[*]}"; else REPLY="$path"; fi
}

# The endpoint that stops a fault of this type (DELETE), if any.
stop_path() {
  case "$type" in
    cpu) REPLY=/load/cpu ;;
    memory) REPLY=/load/memory ;;
    readiness) REPLY=/fault/readiness ;;
    latency) REPLY=/load/latency ;;
    liveness) REPLY=/fault/liveness ;;
    errors) REPLY=/fault/errors ;;
    disk) REPLY=/load/disk ;;
    startup) REPLY=/fault/slowstart ;;
    *) REPLY="" ;;
  esac
}

# The fault this run started that may still run: until FAULT_UNTIL (NOW_MS),
# or, when that is empty, until it is stopped.
fault_running=0
FAULT_UNTIL=""
# A trigger was sent and its answer not yet taken in: bash runs a trap only
# once the POST's curl has returned (a disk fill or a large leak answers
# after seconds), so an interrupt then must stop what the POST started.
trigger_in_flight=0

# Stops the fault this run started, if it may still run; says so.
stop_fault() {
  if ((trigger_in_flight)); then
    trigger_in_flight=0
    # Accepted, or no answer (curl interrupted: the fault may run anyway).
    if [[ ${TRIGGER_CODE:-000} == @(2??|000) ]]; then
      fault_running=1
      FAULT_UNTIL=""
    fi
  fi
  ((fault_running)) || return 0
  fault_running=0
  tick
  if [[ -n $FAULT_UNTIL ]] && ((NOW_MS > FAULT_UNTIL + 1000)); then
    return 0
  fi
  stop_path
  [[ -n $REPLY ]] || return 0
  local path=$REPLY code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "${auth[@]}" --connect-timeout 5 \
    --max-time 30 "$url$path" 2>/dev/null) || true
  echo "  stopped the $type fault it started: DELETE $path answered ${code:-000}" >&2
  STOPPED=1
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

# The service's cooldown, as a cooldown 429's Retry-After told it (ms), and
# when this run's last trigger was accepted (NOW_MS).
learned_cooldown_ms=""
accepted_at=""
memory_size=limit

# trigger: POSTs the fault, waiting out 429s. Sets TRIGGER_CODE, TRIGGER_WAITED
# (seconds spent on 429s) and TRIGGER_ERROR (text for a failed trigger).
trigger() {
  trigger_target
  local target=$REPLY
  TRIGGER_WAITED=0
  TRIGGER_ERROR=""
  tick
  local give_up=$((NOW_MS + timeout * 1000))
  while :; do
    TRIGGER_CODE=""
    trigger_in_flight=1
    TRIGGER_CODE=$(curl -s -X POST "${auth[@]}" -D "$work/headers" -o "$work/body" -w '%{http_code}' \
      --connect-timeout 5 --max-time 30 "$url$target" 2>/dev/null) || true
    [[ $TRIGGER_CODE =~ ^[0-9]{3}$ ]] || TRIGGER_CODE=000
    if [[ $TRIGGER_CODE == 400 && $type == memory && $memory_size == limit ]] &&
      grep -q 'needs a cgroup memory limit' "$work/body"; then
      echo "  the service has no memory limit: leaking its MEMORY_MB instead of 150% of a limit" >&2
      memory_size=service
      trigger_target
      target=$REPLY
      continue
    fi
    [[ $TRIGGER_CODE == 429 ]] || break
    local retry
    retry=$(awk -F': *' 'tolower($1) == "retry-after" { gsub(/\r/, "", $2); print $2 }' "$work/headers")
    [[ $retry =~ ^[0-9]+$ ]] || retry=1
    tick
    if ((NOW_MS + retry * 1000 > give_up)); then
      TRIGGER_ERROR="guardrail still refusing after ${TRIGGER_WAITED} s (Retry-After ${retry} s exceeds --timeout)"
      return
    fi
    # A held slot first: its 429 names the cooldown too when that has not
    # passed either, but the slot is what the wait is for.
    local why="a running fault holds the slot (MAX_CONCURRENT_CHAOS)" running
    if grep -q 'MAX_CONCURRENT_CHAOS' "$work/body"; then
      running=$(sed -n 's/.*(running: \([^)]*\)).*/\1/p' "$work/body" | head -n 1)
      [[ -z $running ]] || why="a running fault ($running) holds the slot (MAX_CONCURRENT_CHAOS)"
    elif grep -q 'CHAOS_COOLDOWN_SECONDS' "$work/body"; then
      why="the service's cooldown (CHAOS_COOLDOWN_SECONDS)"
      [[ -z $accepted_at ]] || learned_cooldown_ms=$((NOW_MS + retry * 1000 - accepted_at))
    fi
    echo "  429 from the guardrails: $why; waiting Retry-After ${retry} s" >&2
    wait_ms $((retry * 1000)) "Retry-After"
    TRIGGER_WAITED=$((TRIGGER_WAITED + retry))
  done
  if [[ $type == startup && $TRIGGER_CODE == 2?? ]]; then
    # The slow start is planned: the restart carries it out.
    target=/crash
    fault_running=1
    FAULT_UNTIL=""
    TRIGGER_CODE=""
    TRIGGER_CODE=$(curl -s -X POST "${auth[@]}" -o "$work/body" -w '%{http_code}' \
      --connect-timeout 5 --max-time 30 "$url$target" 2>/dev/null) || true
    [[ $TRIGGER_CODE =~ ^[0-9]{3}$ ]] || TRIGGER_CODE=000
  fi
  case "$TRIGGER_CODE" in
    2??)
      fault_running=1
      FAULT_UNTIL=""
      trigger_in_flight=0
      tick
      accepted_at=$NOW_MS
      ;;
    000) TRIGGER_ERROR="no answer from $url$target" ;;
    *)
      local msg
      msg=$(tr -d '\r\n' <"$work/body" | head -c 200)
      TRIGGER_ERROR="HTTP $TRIGGER_CODE: $msg"
      ;;
  esac
  trigger_in_flight=0
}

# Before a trigger: the rest of the service's cooldown, once a 429 told it.
wait_for_cooldown() {
  [[ -n $learned_cooldown_ms && -n $accepted_at ]] || return 0
  tick
  local left=$((accepted_at + learned_cooldown_ms - NOW_MS))
  ((left > 0)) || return 0
  seconds "$left"
  local l=$REPLY
  seconds "$learned_cooldown_ms"
  echo "  waiting $l s for the service's cooldown (about $REPLY s, told by a 429's Retry-After)" >&2
  wait_ms "$left" "the service's cooldown"
}

# A number in the trigger's JSON answer ("" when absent).
answer_number() {
  REPLY=$(awk -F"\"$1\":" 'NF > 1 { split($2, a, /[,}]/); print a[1] }' "$work/body")
  [[ $REPLY =~ ^[0-9]+$ ]] || REPLY=""
}

# --- results ----------------------------------------------------------------
done_count=0
recovered_count=0
recovered_sum_ms=0
restarts=0
declare -A outcome_count=()

clean_detail() { # no commas, quotes or line breaks in the detail column
  local d=${1//,/;}
  d=${d//\"/\'}
  d=${d//$'\n'/ }
  REPLY=${d//$'\r'/}
}

record() { # iteration triggered_at_ms detected_ms degraded_ms recovered_ms outcome detail
  local det="" deg="" rec=""
  [[ -z $3 ]] || { seconds "$3"; det=$REPLY; }
  [[ -z $4 ]] || { seconds "$4"; deg=$REPLY; }
  [[ -z $5 ]] || { seconds "$5"; rec=$REPLY; }
  clean_detail "$7"
  printf '%s,%s,%s,%s,%s,%s,%s,%s\n' "$1" "$type" "$2" "$det" "$deg" "$rec" "$6" "$REPLY" >>"$out"
  done_count=$((done_count + 1))
  outcome_count[$6]=$((${outcome_count[$6]:-0} + 1))
  if [[ $6 == recovered ]]; then
    recovered_count=$((recovered_count + 1))
    recovered_sum_ms=$((recovered_sum_ms + $5))
  fi
  local line="[$1/$iterations] $type: $6"
  [[ -z $det ]] || line+=", detected in $det s"
  [[ -z $deg ]] || line+=", degraded $deg s"
  [[ -z $rec ]] || line+=", recovered $rec s after the fault's end"
  [[ -z $REPLY ]] || line+=" ($REPLY)"
  echo "$line"
}

summary() {
  local mean="none recovered"
  if ((recovered_count > 0)); then
    seconds $((recovered_sum_ms / recovered_count))
    mean="mean recovery $REPLY s after the fault's end"
  fi
  local counts="" k
  for k in recovered no-degradation timeout trigger-failed; do
    counts+=" $k=${outcome_count[$k]:-0}"
  done
  echo "summary: $done_count of $iterations iterations finished, $recovered_count recovered, $mean; restarts $restarts;$counts"
  echo "results: $out"
  ((CLOCK_STEPS == 0)) || echo "note: the wall clock stepped $CLOCK_STEPS time(s); /proc/uptime was used across the steps"
}

finish() {
  stop_fault
  rm -rf "$work"
}
trap finish EXIT

interrupted() {
  # A background sleep would hold our stdout open after we exit.
  local pids
  mapfile -t pids < <(jobs -p)
  ((${#pids[@]} == 0)) || kill "${pids[@]}" 2>/dev/null || true
  echo
  echo "interrupted: the iteration in progress is not recorded"
  stop_fault
  summary
  exit 130
}
trap interrupted INT TERM

# --- main loop --------------------------------------------------------------
timeout_ms=$((timeout * 1000))
[[ $type != liveness ]] || echo "  liveness: detection watches /health; recovery needs /health and /ready 200" >&2
tick
for ((i = 1; i <= iterations; i++)); do
  wait_slow_traffic
  if ((i > 1 && cooldown > 0)); then
    wait_ms $((cooldown * 1000)) "--cooldown"
  fi
  detail=""
  STOPPED=0
  watch_health=0
  watch_root=0
  tick
  if ! poll_until up $((NOW_MS + timeout_ms)) "/ready to be 200 before the trigger"; then
    wall_ms
    record "$i" "$REPLY" "" "" "" trigger-failed "/ready was $PROBE_CODE (not 200) for --timeout before the trigger"
    continue
  fi
  instance
  before=$REPLY
  wait_for_cooldown
  trigger
  tick
  triggered=$NOW_MS
  wall_ms
  triggered_wall=$REPLY
  ((TRIGGER_WAITED == 0)) || detail="guardrail_wait_s=$TRIGGER_WAITED"
  [[ $type != memory || -n $mb || $memory_size == limit ]] || detail="${detail:+$detail;}size=MEMORY_MB (no memory limit)"
  if [[ -n $TRIGGER_ERROR ]]; then
    record "$i" "$triggered_wall" "" "" "" trigger-failed "${detail:+$detail;}$TRIGGER_ERROR"
    continue
  fi
  # When the fault is planned to end (NOW_MS), if it has a planned end.
  planned_end=""
  case "$type" in
    cpu | readiness | latency | liveness | errors)
      answer_number duration_seconds
      [[ -z $REPLY ]] || planned_end=$((triggered + REPLY * 1000))
      ;;
    memory) planned_end=$((triggered + (ramp + hold) * 1000)) ;;
    crash | crashloop | startup) planned_end=$triggered ;;
  esac
  fault_running=1
  FAULT_UNTIL=$planned_end
  [[ $type != @(crash|crashloop|startup) ]] || fault_running=0
  [[ $type != latency ]] || send_slow_traffic
  # How long a fault can take to show: a CPU load, a readiness or latency
  # fault fails readiness while it runs, a leak before its ramp ends (or
  # never), a crash within the abort, a liveness fault at once on /health.
  detect_deadline=$((triggered + timeout_ms))
  if [[ -n $planned_end && $type != @(crash|crashloop|startup) ]]; then
    limit=$((planned_end + 2000))
    [[ $type != memory ]] || limit=$((triggered + ramp * 1000 + 2000))
    ((limit >= detect_deadline)) || detect_deadline=$limit
  fi
  [[ $type != liveness ]] || watch_health=1
  [[ $type != errors ]] || watch_root=1
  DIED_AT=""
  READY_DOWN_AT=""
  if ! poll_until down "$detect_deadline" "the fault to show"; then
    record "$i" "$triggered_wall" "" "" "" no-degradation "${detail:+$detail;}/ready stayed 200"
    continue
  fi
  detected_at=$PROBE_AT
  detected_ms=$((detected_at - triggered))
  ((detected_ms >= 0)) || detected_ms=0
  detail="${detail:+$detail;}first_down_code=$PROBE_CODE"
  [[ $READY_CODE != 000 ]] || DIED_AT=$PROBE_AT
  if [[ $type == errors && -n $planned_end ]]; then
    count_errors_until "$planned_end"
    detail+=";get_failed=$ERRORS_FAILED/$ERRORS_SENT"
  fi
  # Recovery: up to --timeout after the fault's planned end (or detection).
  recover_deadline=$((detected_at + timeout_ms))
  if [[ -n $planned_end ]] && ((planned_end > detected_at)); then
    recover_deadline=$((planned_end + timeout_ms))
  fi
  if ! poll_until up "$recover_deadline" "/ready to be 200 again"; then
    stop_fault
    ((STOPPED == 0)) || detail+=";stopped=yes"
    record "$i" "$triggered_wall" "$detected_ms" "" "" timeout "$detail;still_code=$PROBE_CODE"
    continue
  fi
  recovered_at=$PROBE_AT
  instance
  after=$REPLY
  restarted=no
  if [[ -n $before && -n $after && ${before%% *} != "${after%% *}" ]]; then
    restarted=yes
    restarts=$((restarts + 1))
    fault_running=0
  fi
  # The fault's end: the death when the process died with it, else its
  # planned end. A restart between two polls hides the death: it came after
  # the poll before the first one the new process answered (or, for a
  # liveness fault, at the first /ready the stop failed).
  if [[ $restarted == yes && -z $DIED_AT ]]; then
    if [[ $type == liveness && -n $READY_DOWN_AT ]]; then
      DIED_AT=$READY_DOWN_AT
    else
      DIED_AT=${PREVIOUS_AT:-$recovered_at}
    fi
  fi
  fault_end=$planned_end
  if [[ -n $DIED_AT ]] && [[ $type != @(crash|crashloop|startup) ]] && { [[ -z $fault_end ]] || ((DIED_AT < fault_end)); }; then
    fault_end=$DIED_AT
  fi
  [[ -n $fault_end ]] || fault_end=$detected_at
  degraded_ms=$((fault_end - detected_at))
  ((degraded_ms >= 0)) || degraded_ms=0
  from=$fault_end
  ((from <= recovered_at)) || from=$recovered_at
  recovered_ms=$((recovered_at - from))
  detail+=";restart=$restarted"
  if [[ $type == crash ]]; then
    crash_to_startup "$before" "$after"
    detail+=";crash_to_startup_s=${REPLY:-unknown}"
  fi
  if [[ $type == crashloop ]]; then
    crash_loop "$before" "$after"
    read -r loop_starts loop_s <<<"${REPLY:-unknown unknown}"
    detail+=";crashloop_starts=$loop_starts;crashloop_s=$loop_s"
  fi
  [[ $type != startup ]] || detail+=";slow_start_s=${seconds:-5}"
  tick
  if [[ -n $FAULT_UNTIL ]] && ((NOW_MS >= FAULT_UNTIL)); then fault_running=0; fi
  record "$i" "$triggered_wall" "$detected_ms" "$degraded_ms" "$recovered_ms" recovered "$detail"
done
wait_slow_traffic
summary

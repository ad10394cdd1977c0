#!/usr/bin/env bash
# validate-matrix.sh: the Controlled Failure Matrix as hypotheses with
# verdicts on a live cluster. Triggers each fault on one pod and measures the
# healing from the Kubernetes side (Pods, EndpointSlices, HPA), not only from
# the app, and what users saw (an observer pod driving traffic through the
# Service). Needs bash, curl and kubectl.
# The conditions are called through wait_for's argument and the handlers
# through traps, which shellcheck cannot follow:
# shellcheck disable=SC2329
set -euo pipefail
shopt -s extglob

usage() {
  cat <<'USAGE'
Usage: scripts/validate-matrix.sh --namespace NS [options]

For each row: start an observer pod (what users see, below), record the
state before, trigger the fault on one pod, watch the Kubernetes objects
until the hypothesis holds or its time runs out, record every observation,
restore (stop the fault, wait for Ready), stop the observer, and go on.

Options:
  --namespace NS       namespace of the Deployment (required)
  --selector SEL       pod label selector (default app.kubernetes.io/name=chaos-backend)
  --service NAME       Service whose EndpointSlices are watched (default chaos-backend)
  --hpa NAME           HorizontalPodAutoscaler to watch (default chaos-backend)
  --rows LIST          rows to run, comma-separated (default crash,oom,degraded,hpa,evict,errors;
                       also crashloop, startup)
  --hypotheses FILE    override hypotheses (format below)
  --out DIR            journal and verdict directory (default ./matrix-<unix time>)
  --token T            bearer token for the chaos endpoints (default $CHAOS_TOKEN)
  --url URL            reach the pod at URL instead of `kubectl port-forward`
  --poll S             seconds between observations (default 1; decimals allowed)
  --observer-image IMG image of the observer pods (default: the image of the
                       pod the rows start on)
  --observer-url URL   what the observer asks (default http://SERVICE:PORT/,
                       the Service's name and first port)
  --observer-rate R    observer requests per second (default 20)
  --observer-tail S    seconds the observer keeps watching after a row's
                       verdict, so that a pod coming back is seen (default 5)
  --no-observer        no observer pods and no user columns
  --prometheus URL     a Prometheus that scrapes the pods and has the rules of
                       prometheus/rules.yml (the PrometheusRule of
                       manifests/components/monitoring): the errors row
                       checks its burn-rate alert there
  -h, --help           this help

Rows and default hypotheses:
  crash     POST /crash. restartCount rises within crash.restart_within (60) s,
            lastState.terminated.exitCode is one of crash.exit_codes (134,139),
            Ready again within crash.ready_within (60) s of the restart.
  oom       POST oom.trigger (/load/memory?percent_of_limit=150: half again
            the container's memory limit). restartCount rises and
            lastState.terminated.reason is oom.reason (OOMKilled) within
            oom.within (120) s; Ready again within oom.ready_within (60) s.
  degraded  POST /fault/readiness?duration=degraded.fault_seconds (60). The
            pod's address leaves the Service's EndpointSlices (absent or not
            ready) within degraded.removed_within (10) s with no restart;
            after DELETE /fault/readiness it is back within
            degraded.back_within (10) s.
  hpa       POST /load/cpu?duration=hpa.load_seconds (240); desiredReplicas
            rises within hpa.scale_within (180) s. Needs pods older than 5
            minutes or READY_FAIL_ON_CPU_STRESS=false (see docs/kubernetes.md).
  evict     POST evict.trigger (/load/disk: the default 96 MiB, past the
            64Mi emptyDir sizeLimit). The pod reaches phase Failed with
            reason evict.reason (Evicted) within evict.evicted_within (135)
            s, and a new pod of the Deployment is Ready within
            evict.replacement_within (60) s of that. 135 s, not 90: the
            kubelet samples volume usage every 60 to 120 s (the
            volume-stats aggregation period, 1 min, jittered by up to 100%)
            and checks for eviction every 10 s. Later rows use a Ready
            pod picked afresh; the evicted one stays (phase Failed) until
            it is deleted or garbage-collected.
            The time to the replacement is measured here, not by
            chaos-generator.sh --type disk: with two replicas the Service
            never becomes unreachable, and a port-forward dies with its pod.
  crashloop POST /fault/crashloop?starts=crashloop.starts (3): the crash,
            then that many failing starts (exit code crashloop.exit_code,
            75). Waiting reason CrashLoopBackOff is seen; every start after
            the crash exits with 75 but the last, which is Ready; all within
            crashloop.within (180) s. The back-off gaps, each from a
            container's finishedAt to the next one's startedAt (the
            container statuses), follow Kubernetes' doubling: 10 s, 20 s,
            40 s ... (capped at 300; the first restart after a first crash
            comes at once and is not compared; when an earlier row left a
            back-off, the doubling starts where it was), each within
            crashloop.gap_tolerance_s (3) s or crashloop.gap_tolerance_pct
            (25) % of its expected value, whichever is larger. A start that
            began and ended between two polls (restartCount rose by 2) is
            reported unseen and its gaps not compared: the row fails
            saying so (use a shorter --poll).
  startup   POST /fault/slowstart?seconds=S&starts=1, then POST /crash,
            twice: S = startup.under_seconds (5), below the startup probe's
            budget startup.budget_s (10: failureThreshold x periodSeconds of
            manifests/deployment.yaml), then S = startup.over_seconds (20).
            Under: the held start becomes Ready S to S + startup.ready_slack_s
            (5) s after it started (Ready's lastTransitionTime against
            state.running.startedAt), with no restart of its own. Over: the
            held start is stopped by the kubelet (one more restart) between
            startup.budget_s and startup.budget_s + startup.stop_slack_s (25:
            the ordered stop and the grace period) s after it started, and
            the next start is Ready within startup.ready_slack_s s. Each
            half within startup.within (420) s: a restart may wait a back-off
            an earlier row left (up to 300 s).
  errors    POST /fault/errors?percent=errors.percent (20)&mode=errors.mode
            (status)&duration=errors.fault_seconds (300). Users see the
            errors (ROW.min_errors, 1), the pod neither restarts nor leaves
            the Service (errors are not a health failure), and with
            --prometheus the page alert's expression is true: the series
            ALERTS{alertname="ChaosBackendErrorBudgetBurn"} of the namespace
            exists within errors.alert_within (240) s (a 1 s to 1 min scrape,
            the rule's evaluation, and two samples in its 5-minute window).
            Without --prometheus the row watches errors.watch_seconds (10)
            and says the alert was not checked. DELETE /fault/errors ends it.

Users: during every row an observer pod (`chaos-backend observe` from the
same image, docs/observer.md) sends GET / through the Service's name, a new
connection per request, from before the trigger until --observer-tail
seconds after the row's verdict; it is deleted then, and its summary (the
last line of its log, kept in OUT/observer-ROW.jsonl) fills the user
columns: requests, errors by class, availability, p99, and the faulted pod's
traffic: when it stopped and started getting requests (its gaps, in seconds
since the observer started; the trigger's t comes from the two wall clocks).
Four user hypotheses per row; the value "any" skips one:
  ROW.max_errors        failed requests, every class together
  ROW.min_availability  percent of finished requests answered 2xx
  ROW.max_p99_ms        p99 latency in ms, measured from due times
  ROW.max_streak_s      longest time in which every request failed
  ROW.min_errors        failed requests at least (errors: users must see them)
The defaults hold for a healthy Deployment of 3 replicas:
  degraded, hpa  max_errors=0, min_availability=100, max_streak_s=any: a pod
                 that fails readiness keeps answering while the Service
                 drops it, and new pods get traffic only once Ready, so no
                 request fails.
  crash, oom,    max_errors=any, min_availability=80, max_streak_s=1: the
  evict          dead pod's share of new connections (1 in 3) fails from
                 the kill until its endpoint leaves (kubelet status sync
                 plus kube-proxy sync, 1 to 4 s); over an observer window
                 of at least 10 s (start, row, tail) that is at most
                 1/3 x 4/10 = 13% of the requests (with the manifests' 2
                 replicas, 1/2 x 4/10 = 20%: at the edge; scale to 3 for
                 the run). The other replicas answer throughout, so all
                 requests never fail together for a second.
  errors         min_errors=1, max_streak_s=1, the rest any: 20% of the
                 faulted pod's answers are 503s, and the other replicas
                 answer throughout.
  every row      max_p99_ms=1000: GET / takes milliseconds and failures end
                 fast (refused, reset); a p99 at half the observer's 2 s
                 timeout means requests hung on a pod still in the Service.

Hypotheses file: one `row.key=value` per line, `#` starts a comment, e.g.
  crash.restart_within=30
  oom.reason=OOMKilled
  degraded.removed_within=5
  degraded.max_p99_ms=200

Output: a markdown verdict table on stdout and in OUT/verdict.md (a row
passes when its Kubernetes hypothesis and its user hypotheses hold), and
OUT/journal.jsonl: one JSON object per observation, written as it is made,
so an interrupted run keeps everything it measured. On exit, interrupted or
not, every fault this run started is stopped (POST /chaos/stop) and every
observer pod is deleted.

Exit status: 0 every selected row passed; 1 a row failed; 2 bad usage;
130 interrupted.
USAGE
}

die_usage() {
  echo "validate-matrix.sh: $1" >&2
  echo "Try --help." >&2
  exit 2
}

namespace=""
selector="app.kubernetes.io/name=chaos-backend"
service="chaos-backend"
hpa="chaos-backend"
rows="crash,oom,degraded,hpa,evict,errors"
hypotheses_file=""
out="matrix-$(date +%s)"
token="${CHAOS_TOKEN:-}"
url=""
poll=1
observer=1
observer_image=""
observer_url=""
observer_rate=20
observer_tail=5
prometheus=""
KUBECTL="${KUBECTL:-kubectl}"

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --no-observer) observer=0; shift ;;
    --namespace | --selector | --service | --hpa | --rows | --hypotheses | --out | --token | --url | --poll | \
      --observer-image | --observer-url | --observer-rate | --observer-tail | --prometheus)
      [[ $# -ge 2 && -n $2 ]] || die_usage "$1 needs a value"
      case "$1" in
        --namespace) namespace="$2" ;;
        --selector) selector="$2" ;;
        --service) service="$2" ;;
        --hpa) hpa="$2" ;;
        --rows) rows="$2" ;;
        --hypotheses) hypotheses_file="$2" ;;
        --out) out="$2" ;;
        --token) token="$2" ;;
        --url) url="${2%/}" ;;
        --poll) poll="$2" ;;
        --observer-image) observer_image="$2" ;;
        --observer-url) observer_url="$2" ;;
        --observer-rate) observer_rate="$2" ;;
        --observer-tail) observer_tail="$2" ;;
        --prometheus) prometheus="${2%/}" ;;
      esac
      shift 2
      ;;
    *) die_usage "unknown option \"$1\"" ;;
  esac
done
[[ -n $namespace ]] || die_usage "--namespace is required"
[[ $poll =~ ^[0-9]+([.][0-9]+)?$ ]] || die_usage "--poll \"$poll\": expected seconds"
[[ $observer_rate =~ ^[0-9]+([.][0-9]+)?$ && $observer_rate != +(0|.) ]] ||
  die_usage "--observer-rate \"$observer_rate\": expected requests per second above 0"
[[ $observer_tail =~ ^[0-9]+$ ]] || die_usage "--observer-tail \"$observer_tail\": expected whole seconds"
IFS=',' read -r -a selected <<<"$rows"
for r in "${selected[@]}"; do
  case "$r" in crash | oom | degraded | hpa | evict | errors | crashloop | startup) ;; *) die_usage "--rows: unknown row \"$r\"" ;; esac
done

# --- hypotheses -------------------------------------------------------------
declare -A hyp=(
  [crash.restart_within]=60 [crash.exit_codes]="134,139" [crash.ready_within]=60
  [oom.within]=120 [oom.reason]=OOMKilled [oom.ready_within]=60
  [oom.trigger]="/load/memory?percent_of_limit=150"
  [degraded.fault_seconds]=60 [degraded.removed_within]=10 [degraded.back_within]=10
  [hpa.load_seconds]=240 [hpa.scale_within]=180
  [evict.trigger]="/load/disk" [evict.reason]=Evicted
  [evict.evicted_within]=135 [evict.replacement_within]=60
  [crashloop.starts]=3 [crashloop.exit_code]=75 [crashloop.within]=180
  [crashloop.gap_tolerance_s]=3 [crashloop.gap_tolerance_pct]=25
  [startup.under_seconds]=5 [startup.over_seconds]=20 [startup.budget_s]=10
  [startup.ready_slack_s]=5 [startup.stop_slack_s]=25 [startup.within]=420
  [errors.percent]=20 [errors.mode]=status [errors.fault_seconds]=300
  [errors.alert_within]=240 [errors.watch_seconds]=10
)
# What users see, per row (see --help for why these defaults).
for r in crash oom evict crashloop startup; do
  hyp[$r.max_errors]=any hyp[$r.min_availability]=80 hyp[$r.max_p99_ms]=1000 hyp[$r.max_streak_s]=1
done
for r in degraded hpa; do
  hyp[$r.max_errors]=0 hyp[$r.min_availability]=100 hyp[$r.max_p99_ms]=1000 hyp[$r.max_streak_s]=any
done
hyp[errors.max_errors]=any hyp[errors.min_availability]=any hyp[errors.max_p99_ms]=1000 hyp[errors.max_streak_s]=1
for r in crash oom evict crashloop startup degraded hpa; do hyp[$r.min_errors]=any; done
hyp[errors.min_errors]=1
USER_KEYS=(max_errors min_errors min_availability max_p99_ms max_streak_s)
# hypothesis_ok KEY VALUE: whether VALUE fits KEY; REPLY says what fits. A
# value the rows cannot use (seconds as "1.5" or "abc" in shell arithmetic)
# is refused here, before any fault is started.
hypothesis_ok() {
  local whole='^[0-9]{1,9}$'
  case $1 in
    *.max_errors | *.min_errors | *.min_availability | *.max_p99_ms | *.max_streak_s)
      REPLY="a number or any"
      [[ $2 =~ ^(any|[0-9]+([.][0-9]+)?)$ ]]
      ;;
    crash.exit_codes) REPLY="exit codes (0 to 255), comma-separated"; [[ $2 =~ ^[0-9]{1,3}(,[0-9]{1,3})*$ ]] ;;
    crashloop.exit_code) REPLY="an exit code (0 to 255)"; [[ $2 =~ $whole ]] && ((10#$2 <= 255)) ;;
    crashloop.starts) REPLY="a whole number from 1 to 20"; [[ $2 =~ $whole ]] && ((10#$2 >= 1 && 10#$2 <= 20)) ;;
    errors.percent) REPLY="a whole number from 1 to 100"; [[ $2 =~ $whole ]] && ((10#$2 >= 1 && 10#$2 <= 100)) ;;
    errors.mode) REPLY="status, reset, close or stall"; [[ $2 == @(status|reset|close|stall) ]] ;;
    oom.trigger | evict.trigger) REPLY="a path starting with /"; [[ $2 == /* ]] ;;
    oom.reason | evict.reason) REPLY="a reason (letters)"; [[ $2 =~ ^[A-Za-z]+$ ]] ;;
    crashloop.gap_tolerance_s | crashloop.gap_tolerance_pct | startup.ready_slack_s | startup.stop_slack_s)
      REPLY="whole seconds (or percent), 0 or more"
      [[ $2 =~ $whole ]]
      ;;
    *) REPLY="whole seconds, 1 or more"; [[ $2 =~ $whole ]] && ((10#$2 >= 1)) ;;
  esac
}
if [[ -n $hypotheses_file ]]; then
  [[ -r $hypotheses_file ]] || die_usage "cannot read --hypotheses \"$hypotheses_file\""
  n=0
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    line="${line%%#*}"
    line="${line//[[:space:]]/}"
    [[ -n $line ]] || continue
    key="${line%%=*}"
    [[ $line == *=* && -n ${hyp[$key]+set} ]] || die_usage "$hypotheses_file:$n: unknown hypothesis \"$line\""
    hyp[$key]="${line#*=}"
    hypothesis_ok "$key" "${hyp[$key]}" || die_usage "$hypotheses_file:$n: \"${hyp[$key]}\" for $key: expected $REPLY"
    # "08" is 8, not an octal error in the rows' arithmetic.
    [[ ! ${hyp[$key]} =~ ^[0-9]+$ ]] || hyp[$key]=$((10#${hyp[$key]}))
  done <"$hypotheses_file"
fi

mkdir -p "$out"
journal="$out/journal.jsonl"
: >>"$journal"

# --- clock and journal -------------------------------------------------------
now_ms() { local t=$EPOCHREALTIME; REPLY=$((10#${t/[.,]/} / 1000)); }

json_escape() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; REPLY=${s//$'\n'/ }; }

# note ROW PHASE key=value...: appends one JSON line to the journal.
note() {
  now_ms
  local line="{\"ts_ms\":$REPLY,\"row\":\"$1\",\"phase\":\"$2\"" kv
  shift 2
  for kv in "$@"; do
    json_escape "${kv#*=}"
    line+=",\"${kv%%=*}\":\"$REPLY\""
  done
  printf '%s}\n' "$line" >>"$journal"
}

# --- Kubernetes: every kubectl call is here ----------------------------------
# fetch ARGS...: `kubectl get ... -o json` as JSON text.
fetch() { "$KUBECTL" -n "$namespace" get "$@" -o json 2>/dev/null; }

# extract EXPR: applies a jsonpath to the JSON on stdin, offline (kubectl
# evaluates it on a local object, touching no cluster). On a List it is
# applied to each item in turn.
extract() { KUBECONFIG=/dev/null kubectl annotate --local -f - validate-matrix=1 -o "jsonpath=$1" 2>/dev/null; }

# pod_state NAME: sets RESTARTS, REASON, EXIT_CODE, READY, POD_IP.
pod_state() {
  local fields
  fields=$(fetch pod "$1" | extract '{.status.containerStatuses[0].restartCount}|{.status.containerStatuses[0].lastState.terminated.reason}|{.status.containerStatuses[0].lastState.terminated.exitCode}|{.status.conditions[?(@.type=="Ready")].status}|{.status.podIP}') || fields=""
  IFS='|' read -r RESTARTS REASON EXIT_CODE READY POD_IP <<<"$fields" || true
  RESTARTS=${RESTARTS:-}
}

# endpoint_state IP: sets ENDPOINT to ready, not-ready or absent.
endpoint_state() {
  local lines
  lines=$(fetch endpointslices -l "kubernetes.io/service-name=$service" |
    extract '{range .endpoints[*]}{.addresses[0]}={.conditions.ready}{"\n"}{end}') || lines=""
  ENDPOINT=absent
  local l
  while IFS= read -r l; do
    [[ ${l%%=*} == "$1" ]] || continue
    if [[ ${l#*=} == true ]]; then ENDPOINT=ready; else ENDPOINT=not-ready; fi
  done <<<"$lines"
}

# phase_state NAME: sets PHASE, PREASON and PMESSAGE (status.phase, .reason,
# .message); all empty once the pod is gone.
phase_state() {
  local fields
  fields=$(fetch pod "$1" | extract '{.status.phase}|{.status.reason}|{.status.message}') || fields=""
  IFS='|' read -r PHASE PREASON PMESSAGE <<<"$fields" || true
}

# life_state NAME: the container's lives, as its status tells them: sets
# RESTARTS, WAITING (state.waiting.reason), RUNNING_AT (state.running.startedAt),
# LAST_CODE, LAST_STARTED, LAST_FINISHED (lastState.terminated), READY and
# READY_AT (the Ready condition's lastTransitionTime).
life_state() {
  local fields
  fields=$(fetch pod "$1" | extract '{.status.containerStatuses[0].restartCount}|{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.running.startedAt}|{.status.containerStatuses[0].lastState.terminated.exitCode}|{.status.containerStatuses[0].lastState.terminated.startedAt}|{.status.containerStatuses[0].lastState.terminated.finishedAt}|{.status.conditions[?(@.type=="Ready")].status}|{.status.conditions[?(@.type=="Ready")].lastTransitionTime}') || fields=""
  IFS='|' read -r RESTARTS WAITING RUNNING_AT LAST_CODE LAST_STARTED LAST_FINISHED READY READY_AT <<<"$fields" || true
}

# epoch TIME: REPLY is the RFC 3339 TIME in seconds since the epoch (empty
# for an empty or bad one).
epoch() { REPLY=$(date -u -d "$1" +%s 2>/dev/null) || REPLY=""; }

# pod_list: NAME=READY lines for every pod of the selector.
pod_list() {
  fetch pods -l "$selector" |
    extract '{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}'
}

# hpa_state: sets DESIRED and CURRENT replicas.
hpa_state() {
  local fields
  fields=$(fetch hpa "$hpa" | extract '{.status.desiredReplicas}|{.status.currentReplicas}') || fields=""
  IFS='|' read -r DESIRED CURRENT <<<"$fields" || true
}

# pick_pod: sets PICKED to a Ready pod of the selector (empty if none) and
# PICKED_IMAGE to the image of its first container.
pick_pod() {
  local line
  line=$(fetch pods -l "$selector" |
    extract '{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}={.spec.containers[0].image}{"\n"}' |
    awk -F= '$2 == "True" { print; exit }') || line=""
  PICKED=${line%%=*}
  PICKED_IMAGE=${line#*=*=}
}

forward_pid=""
# reach POD: sets BASE to a URL that reaches the pod's port 8080.
reach() {
  if [[ -n $url ]]; then BASE=$url; return; fi
  [[ -z $forward_pid ]] || kill "$forward_pid" 2>/dev/null || true
  "$KUBECTL" -n "$namespace" port-forward "pod/$1" :8080 >"$out/port-forward.log" 2>&1 &
  forward_pid=$!
  local port="" i
  for i in $(seq 1 50); do
    port=$(awk '/Forwarding from 127.0.0.1:/ { sub(/.*127.0.0.1:/, ""); sub(/ .*/, ""); print; exit }' "$out/port-forward.log")
    [[ -z $port ]] || break
    sleep 0.2
  done
  [[ -n $port ]] || { echo "validate-matrix.sh: kubectl port-forward to $1 failed (attempt $i)" >&2; return 1; }
  BASE="http://127.0.0.1:$port"
}

# --- the app -----------------------------------------------------------------
auth_args=()
if [[ -n $token ]]; then
  printf 'Authorization: Bearer %s\n' "$token" >"$out/.auth"
  chmod 600 "$out/.auth"
  auth_args=(-H "@$out/.auth")
fi
started_faults=0
chaos() { # METHOD PATH: prints the HTTP code
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X "$1" "${auth_args[@]}" "$BASE$2" 2>/dev/null || true
}

stop_faults() {
  ((started_faults)) || return 0
  if [[ -n ${BASE:-} ]]; then
    local code
    code=$(chaos POST /chaos/stop)
    note all restore "chaos_stop=$code"
  fi
}

# --- the observer: what users saw ---------------------------------------------
CLASSES=(refused reset timeout http_5xx http_other bad_body local)
obs_pod=""
obs_logs_pid=""
obs_log=""
obs_faulted=""
TRIGGER_MS=""

# observer_target: the URL the observer asks, from the Service unless given.
observer_target() {
  ((observer)) && [[ -z $observer_url ]] || return 0
  local port
  port=$(fetch service "$service" | extract '{.spec.ports[0].port}') || port=""
  observer_url="http://$service:${port:-80}/"
}

# observer_pod NAME ROW: the observer Pod as JSON, with the restricted
# securityContext and the resources of manifests/observer.yaml.
observer_pod() {
  local image url
  json_escape "$observer_image"
  image=$REPLY
  json_escape "$observer_url"
  url=$REPLY
  printf '%s' "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"$1\",\"namespace\":\"$namespace\",\
\"labels\":{\"app.kubernetes.io/name\":\"chaos-backend-observer\",\"app.kubernetes.io/component\":\"observer\",\
\"app.kubernetes.io/part-of\":\"chaos-lab\",\"chaos-backend.io/matrix-row\":\"$2\"}},\
\"spec\":{\"restartPolicy\":\"Never\",\"activeDeadlineSeconds\":3600,\"terminationGracePeriodSeconds\":10,\
\"automountServiceAccountToken\":false,\"enableServiceLinks\":false,\
\"securityContext\":{\"runAsNonRoot\":true,\"runAsUser\":65532,\"runAsGroup\":65532,\"seccompProfile\":{\"type\":\"RuntimeDefault\"}},\
\"containers\":[{\"name\":\"observer\",\"image\":\"$image\",\"imagePullPolicy\":\"IfNotPresent\",\
\"args\":[\"observe\",\"--url\",\"$url\",\"--rate\",\"$observer_rate\"],\
\"resources\":{\"requests\":{\"cpu\":\"50m\",\"memory\":\"16Mi\",\"ephemeral-storage\":\"1Mi\"},\
\"limits\":{\"cpu\":\"500m\",\"memory\":\"32Mi\",\"ephemeral-storage\":\"4Mi\"}},\
\"securityContext\":{\"runAsNonRoot\":true,\"runAsUser\":65532,\"runAsGroup\":65532,\"readOnlyRootFilesystem\":true,\
\"allowPrivilegeEscalation\":false,\"capabilities\":{\"drop\":[\"ALL\"]},\"seccompProfile\":{\"type\":\"RuntimeDefault\"}}}]}}"
}

# observer_start ROW: starts an observer pod through the Service and follows
# its log into OUT/observer-ROW.jsonl; returns once it is measuring.
observer_start() {
  ((observer)) || return 0
  now_ms
  obs_pod="chaos-backend-observer-$1-$((REPLY / 1000))"
  obs_log="$out/observer-$1.jsonl"
  obs_faulted=$pod
  TRIGGER_MS=""
  : >"$obs_log"
  if ! observer_pod "$obs_pod" "$1" | "$KUBECTL" -n "$namespace" create -f - >>"$out/observer.log" 2>&1; then
    note "$1" observer "pod=$obs_pod" "status=create failed (see observer.log)"
    obs_pod=""
    return 0
  fi
  note "$1" observer "pod=$obs_pod" "image=$observer_image" "url=$observer_url" "rate=$observer_rate"
  "$KUBECTL" -n "$namespace" wait --for=condition=Ready "pod/$obs_pod" --timeout=120s >>"$out/observer.log" 2>&1 ||
    note "$1" observer "pod=$obs_pod" "status=not Ready within 120 s"
  "$KUBECTL" -n "$namespace" logs -f "pod/$obs_pod" >"$obs_log" 2>>"$out/observer.log" &
  obs_logs_pid=$!
  # Its first line says it is measuring (at most 30 s).
  local i
  for ((i = 0; i < 300; i++)); do
    [[ ! -s $obs_log ]] || break
    kill -0 "$obs_logs_pid" 2>/dev/null || break
    sleep 0.1
  done
}

# observer_stop ROW: after --observer-tail seconds, deletes the observer pod
# (SIGTERM: it writes its summary) and reads the summary into U_*.
observer_stop() {
  U_SUMMARY=""
  if [[ -n $obs_pod ]]; then
    sleep "$observer_tail" &
    wait $! || true
    "$KUBECTL" -n "$namespace" delete pod "$obs_pod" --wait=false >>"$out/observer.log" 2>&1 || true
    # The log stream ends when the observer exits (at most 30 s).
    local i
    for ((i = 0; i < 300; i++)); do
      kill -0 "$obs_logs_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$obs_logs_pid" 2>/dev/null || true
    wait "$obs_logs_pid" 2>/dev/null || true
    obs_pod=""
    obs_logs_pid=""
    U_SUMMARY=$(grep '^{"summary":' "$obs_log" | tail -n 1) || U_SUMMARY=""
  fi
  read_summary
}

# read_summary: U_REQUESTS, U_ERRORS (total), U_CLASSES ("reset 3, ..."),
# U_AVAIL, U_P99, U_STREAK and U_TRAFFIC (the faulted pod's gaps) from
# U_SUMMARY; all empty without one.
read_summary() {
  U_REQUESTS="" U_ERRORS="" U_CLASSES="" U_AVAIL="" U_P99="" U_STREAK="" U_TRAFFIC="" U_UNREADABLE=""
  [[ -n $U_SUMMARY ]] || return 0
  # The summary as an object kubectl's JSONPath can read offline.
  local object="{\"apiVersion\":\"chaos-backend.io/v1\",\"kind\":\"ObserverSummary\",\"metadata\":{\"name\":\"observer\"},${U_SUMMARY:1}"
  local path="{.summary.requests}|{.summary.availability}|{.summary.p99_ms}|{.summary.longest_error_streak_s}|{.summary.start_unix_ms}|{.summary.pods.$obs_faulted.requests}"
  local c counts=() start_ms served fields rest
  for c in "${CLASSES[@]}"; do path+="|{.summary.errors.$c}"; done
  if ! fields=$(extract "$path" <<<"$object"); then
    # Not JSON (the log was cut inside the line): nothing was measured,
    # not "0 errors".
    U_UNREADABLE="${U_SUMMARY:0:80}"
    U_SUMMARY=""
    return 0
  fi
  IFS='|' read -r U_REQUESTS U_AVAIL U_P99 U_STREAK start_ms served rest <<<"$fields" || true
  IFS='|' read -r -a counts <<<"$rest"
  U_ERRORS=""
  local i
  for i in "${!CLASSES[@]}"; do
    [[ ${counts[$i]:-} =~ ^[0-9]+$ ]] || continue
    U_ERRORS=$((U_ERRORS + 0))
    ((counts[i] > 0)) || continue
    U_ERRORS=$((U_ERRORS + counts[i]))
    U_CLASSES+="${U_CLASSES:+, }${CLASSES[$i]} ${counts[$i]}"
  done
  # No count of any class: the errors are unknown, not 0.
  [[ -z $U_ERRORS ]] || U_CLASSES=${U_CLASSES:-0}
  local gaps gap text=""
  gaps=$(extract "{range .summary.pods.$obs_faulted.gaps[*]}{.start}={.end}{\" \"}{end}" <<<"$object") || gaps=""
  for gap in $gaps; do
    text+="${text:+; }stopped t=${gap%%=*} s"
    if [[ ${gap#*=} == null || -z ${gap#*=} ]]; then text+=", not back"; else text+=", back t=${gap#*=} s"; fi
  done
  if [[ -z $text ]]; then
    if [[ -n $served ]]; then text="served throughout ($served requests)"; else text="never served"; fi
  fi
  if [[ -n $TRIGGER_MS && $start_ms =~ ^[0-9]+$ ]]; then
    text+=" (trigger t=$(awk -v a="$TRIGGER_MS" -v b="$start_ms" 'BEGIN { printf "%.1f", (a - b) / 1000 }') s)"
  fi
  U_TRAFFIC="$obs_faulted: $text"
}

# holds VALUE <=|>= LIMIT: compares decimals.
holds() {
  awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { exit !(op == "<=" ? v + 0 <= l + 0 : v + 0 >= l + 0) }'
}

# user_verdict ROW: USER_HYP (the user hypotheses in words), USER_MISSED
# (what failed, empty when all held).
user_verdict() {
  local key limit value text op
  USER_HYP="" USER_MISSED=""
  ((observer)) || return 0
  for key in "${USER_KEYS[@]}"; do
    limit=${hyp[$1.$key]}
    [[ $limit != any ]] || continue
    case $key in
      max_errors) text="errors <= $limit" value=$U_ERRORS op="<=" ;;
      min_errors) text="errors >= $limit" value=$U_ERRORS op=">=" ;;
      min_availability) text="availability >= $limit%" value=$U_AVAIL op=">=" ;;
      max_p99_ms) text="p99 <= $limit ms" value=$U_P99 op="<=" ;;
      max_streak_s) text="error streak <= $limit s" value=$U_STREAK op="<=" ;;
    esac
    USER_HYP+="${USER_HYP:+, }$text"
    if [[ -z $U_SUMMARY ]]; then
      continue
    elif [[ -z $value || $value == null ]]; then
      USER_MISSED+="; users: no ${key#*_} measured"
    elif ! holds "$value" "$op" "$limit"; then
      USER_MISSED+="; users: $text missed ($value)"
    fi
  done
  if [[ -n $USER_HYP && -n $U_UNREADABLE ]]; then
    USER_MISSED="; users: the observer's summary is not JSON (cut short?): $U_UNREADABLE"
  elif [[ -n $USER_HYP && -z $U_SUMMARY ]]; then
    USER_MISSED="; users: no summary from the observer (see observer.log)"
  fi
}

# --- verdicts ----------------------------------------------------------------
verdicts=()
failed=0
ROW_V=()
verdict() { # ROW HYPOTHESIS MEASURED PASS|FAIL: the Kubernetes side of the row
  ROW_V=("$1" "$2" "$3" "$4")
}

# finish_row ROW: stops the row's observer, weighs the user hypotheses and
# writes the row's line to the table and the journal.
finish_row() {
  observer_stop "$1"
  # A row that ended without a verdict is not a pass.
  ((${#ROW_V[@]} == 4)) || verdict "$1" "a verdict" "none: the row ended early (see the journal)" FAIL
  user_verdict "$1"
  local hypothesis=${ROW_V[1]} measured=${ROW_V[2]} ok=${ROW_V[3]}
  [[ -z $USER_HYP ]] || hypothesis+="; users: $USER_HYP"
  if [[ -n $USER_MISSED ]]; then
    ok=FAIL
    measured+=$USER_MISSED
  fi
  local avail=${U_AVAIL:--} p99=${U_P99:--}
  [[ $avail == - || $avail == null ]] || avail+="%"
  [[ $p99 == - || $p99 == null ]] || p99+=" ms"
  verdicts+=("| $1 | $hypothesis | $measured | ${U_REQUESTS:--} | ${U_CLASSES:--} | $avail | $p99 | ${U_TRAFFIC:--} | $ok |")
  [[ $ok == PASS ]] || failed=1
  if ((observer)); then
    note "$1" users "requests=$U_REQUESTS" "errors=$U_ERRORS" "errors_by_class=$U_CLASSES" "availability=$U_AVAIL" \
      "p99_ms=$U_P99" "longest_error_streak_s=$U_STREAK" "faulted_pod_traffic=$U_TRAFFIC" "observer_log=$obs_log"
  fi
  note "$1" verdict "verdict=$ok" "measured=$measured"
}

print_verdicts() {
  {
    echo "| row | hypothesis | measured | requests | errors | availability | p99 | faulted pod traffic | verdict |"
    echo "|---|---|---|---|---|---|---|---|---|"
    local v
    for v in "${verdicts[@]}"; do echo "$v"; done
  } | tee "$out/verdict.md"
  echo "journal: $journal"
}

finish() {
  local status=$?
  trap - EXIT INT TERM
  stop_faults
  [[ -z $forward_pid ]] || kill "$forward_pid" 2>/dev/null || true
  if [[ -n $obs_pod ]]; then
    "$KUBECTL" -n "$namespace" delete pod "$obs_pod" --wait=false >>"$out/observer.log" 2>&1 || true
  fi
  [[ -z $obs_logs_pid ]] || kill "$obs_logs_pid" 2>/dev/null || true
  rm -f "$out/.auth"
  exit "$status"
}
interrupted() {
  note all interrupted
  echo "interrupted: stopping the faults this run started" >&2
  print_verdicts
  exit 130
}
trap finish EXIT
trap interrupted INT TERM

elapsed_s() { # START_MS -> seconds with 3 decimals
  now_ms
  local d=$((REPLY - $1))
  printf -v REPLY '%d.%03d' $((d / 1000)) $((d % 1000))
}

# wait_for DEADLINE_S CONDITION_FN ROW: polls until CONDITION_FN succeeds;
# sets WAITED to the seconds it took. Returns 1 on the deadline.
wait_for() {
  local limit_ms=$(($1 * 1000)) fn=$2 row=$3 t0
  now_ms
  t0=$REPLY
  while :; do
    if "$fn"; then
      elapsed_s "$t0"
      WAITED=$REPLY
      return 0
    fi
    now_ms
    ((REPLY - t0 < limit_ms)) || { WAITED=""; note "$row" deadline "after_s=$1"; return 1; }
    sleep "$poll" &
    wait $! || true
  done
}

# --- rows ----------------------------------------------------------------------
# trigger PATH ACCEPTED: posts the fault for $ROW and journals it; on an
# answer outside ACCEPTED (a glob) records the row as failed and returns 1.
trigger() {
  local code
  now_ms
  TRIGGER_MS=$REPLY
  code=$(chaos POST "$1")
  started_faults=1
  note "$ROW" trigger "path=$1" "code=$code"
  # shellcheck disable=SC2053 # ACCEPTED is a glob on purpose
  if [[ $code != $2 ]]; then
    verdict "$ROW" "trigger accepted" "HTTP $code on ${1%%\?*}" FAIL
    return 1
  fi
}

pod=""
restarted() {
  pod_state "$pod"
  note "$ROW" observe "restartCount=$RESTARTS" "reason=$REASON" "exitCode=$EXIT_CODE" "ready=$READY"
  [[ -n $RESTARTS && $RESTARTS -gt $RESTARTS_BEFORE ]]
}
ready_again() {
  pod_state "$pod"
  note "$ROW" observe "restartCount=$RESTARTS" "ready=$READY"
  [[ $READY == True ]]
}
endpoint_gone() {
  endpoint_state "$POD_IP_BEFORE"
  pod_state "$pod"
  note "$ROW" observe "endpoint=$ENDPOINT" "restartCount=$RESTARTS"
  [[ $ENDPOINT != ready ]]
}
endpoint_back() {
  endpoint_state "$POD_IP_BEFORE"
  note "$ROW" observe "endpoint=$ENDPOINT"
  [[ $ENDPOINT == ready ]]
}
evicted() {
  phase_state "$pod"
  note "$ROW" observe "phase=$PHASE" "reason=$PREASON" "message=$PMESSAGE"
  [[ $PHASE == Failed ]]
}
replacement_ready() {
  local l
  NEW_POD=""
  while IFS= read -r l; do
    [[ -n $l && ${l#*=} == True ]] || continue
    [[ " $PODS_BEFORE " == *" ${l%%=*} "* ]] && continue
    NEW_POD=${l%%=*}
  done <<<"$(pod_list)"
  note "$ROW" observe "new_ready_pod=$NEW_POD"
  [[ -n $NEW_POD ]]
}
scaled_up() {
  hpa_state
  note "$ROW" observe "desiredReplicas=$DESIRED" "currentReplicas=$CURRENT"
  [[ -n $DESIRED && $DESIRED -gt $DESIRED_BEFORE ]]
}

restart_row() { # ROW TRIGGER_PATH WITHIN_KEY READY_KEY
  ROW=$1
  pod_state "$pod"
  RESTARTS_BEFORE=${RESTARTS:-0}
  note "$ROW" before "pod=$pod" "restartCount=$RESTARTS_BEFORE"
  # A process that dies while answering gives no code (000): accepted too.
  trigger "$2" "@(2??|000)" || return 0
  if ! wait_for "${hyp[$3]}" restarted "$ROW"; then
    verdict "$ROW" "restart within ${hyp[$3]} s" "no restart seen" FAIL
    return
  fi
  local restart_s=$WAITED ok=PASS measured
  measured="restart after $restart_s s (exit code $EXIT_CODE, reason ${REASON:-none})"
  if [[ $ROW == crash ]]; then
    [[ ,${hyp[crash.exit_codes]}, == *",$EXIT_CODE,"* ]] || ok=FAIL
  else
    [[ $REASON == "${hyp[oom.reason]}" ]] || ok=FAIL
  fi
  if wait_for "${hyp[$4]}" ready_again "$ROW"; then
    measured+="; Ready $WAITED s later"
  else
    measured+="; not Ready within ${hyp[$4]} s"
    ok=FAIL
  fi
  verdict "$ROW" "restart within ${hyp[$3]} s, then Ready within ${hyp[$4]} s" "$measured" "$ok"
  reach "$pod" || true
}

# pod_before ROW: RESTARTS_BEFORE and POD_IP_BEFORE of the row's pod, journaled.
pod_before() {
  pod_state "$pod"
  RESTARTS_BEFORE=${RESTARTS:-0}
  POD_IP_BEFORE=$POD_IP
  note "$1" before "pod=$pod" "podIP=$POD_IP" "restartCount=$RESTARTS_BEFORE"
}

run_degraded() {
  ROW=degraded
  pod_before degraded
  trigger "/fault/readiness?duration=${hyp[degraded.fault_seconds]}" 202 || return 0
  if ! wait_for "${hyp[degraded.removed_within]}" endpoint_gone degraded; then
    verdict degraded "endpoint removed within ${hyp[degraded.removed_within]} s" "the endpoint never left" FAIL
    return
  fi
  local removed=$WAITED ok=PASS measured code
  measured="removed after $removed s"
  if [[ ${RESTARTS:-0} -ne $RESTARTS_BEFORE ]]; then
    ok=FAIL
    measured+=", but the pod restarted"
  fi
  code=$(chaos DELETE /fault/readiness)
  note degraded release "code=$code"
  if wait_for "${hyp[degraded.back_within]}" endpoint_back degraded; then
    measured+="; back $WAITED s after the release"
  else
    measured+="; not back within ${hyp[degraded.back_within]} s"
    ok=FAIL
  fi
  verdict degraded "removed within ${hyp[degraded.removed_within]} s without restart, back within ${hyp[degraded.back_within]} s" "$measured" "$ok"
}

run_hpa() {
  ROW=hpa
  hpa_state
  DESIRED_BEFORE=${DESIRED:-0}
  note hpa before "desiredReplicas=$DESIRED_BEFORE"
  trigger "/load/cpu?duration=${hyp[hpa.load_seconds]}" 202 || return 0
  if wait_for "${hyp[hpa.scale_within]}" scaled_up hpa; then
    verdict hpa "desiredReplicas rises within ${hyp[hpa.scale_within]} s" "$DESIRED_BEFORE -> $DESIRED after $WAITED s" PASS
  else
    verdict hpa "desiredReplicas rises within ${hyp[hpa.scale_within]} s" "stayed at ${DESIRED:-?}" FAIL
  fi
  note hpa restore "code=$(chaos DELETE /load/cpu)"
}

run_evict() {
  ROW=evict
  local l
  PODS_BEFORE=""
  while IFS= read -r l; do PODS_BEFORE+=" ${l%%=*}"; done <<<"$(pod_list)"
  note evict before "pod=$pod" "pods=${PODS_BEFORE# }"
  # A pod killed while it answers gives no code (000): accepted too. A 507
  # means the disk filled before the fill passed the sizeLimit.
  trigger "${hyp[evict.trigger]}" "@(2??|000)" || return 0
  local hypothesis="Failed/${hyp[evict.reason]} within ${hyp[evict.evicted_within]} s, a new pod Ready within ${hyp[evict.replacement_within]} s"
  if ! wait_for "${hyp[evict.evicted_within]}" evicted evict; then
    verdict evict "$hypothesis" "not evicted (phase ${PHASE:-gone})" FAIL
    return
  fi
  local ok=PASS measured="phase Failed after $WAITED s, reason ${PREASON:-none}"
  [[ $PREASON == "${hyp[evict.reason]}" ]] || ok=FAIL
  if wait_for "${hyp[evict.replacement_within]}" replacement_ready evict; then
    measured+="; $NEW_POD Ready $WAITED s later"
  else
    measured+="; no new pod Ready within ${hyp[evict.replacement_within]} s"
    ok=FAIL
  fi
  verdict evict "$hypothesis" "$measured" "$ok"
  # The evicted pod is gone for good: later rows (and the final stop) use
  # a Ready pod picked afresh.
  pick_pod
  if [[ -n $PICKED ]]; then
    pod=$PICKED
    reach "$pod" || true
  fi
}

# --- crashloop: the back-off between failing starts ----------------------------
# Every termination seen (finishedAt=startedAt=exitCode), oldest first.
LIVES=()
SEEN_BACKOFF=0
loop_over() {
  life_state "$pod"
  note "$ROW" observe "restartCount=$RESTARTS" "waiting=$WAITING" "lastExitCode=$LAST_CODE" \
    "lastStartedAt=$LAST_STARTED" "lastFinishedAt=$LAST_FINISHED" "runningAt=$RUNNING_AT" "ready=$READY"
  [[ $WAITING != CrashLoopBackOff ]] || SEEN_BACKOFF=1
  if [[ -n $LAST_FINISHED && $LAST_FINISHED != "$FINISHED_BEFORE" && " ${LIVES[*]} " != *" $LAST_FINISHED="* ]]; then
    # The life's number: restartCount counts container creations, so the
    # last termination is life restartCount while waiting, restartCount - 1
    # once the next one runs. Two lives whose numbers are not consecutive
    # had one between them that began and ended between two polls.
    local life=${RESTARTS:-0}
    [[ -z $RUNNING_AT ]] || life=$((life - 1))
    LIVES+=("$LAST_FINISHED=$LAST_STARTED=$life=$LAST_CODE")
  fi
  local n=${hyp[crashloop.starts]}
  [[ -n $RESTARTS && $RESTARTS -ge $((RESTARTS_BEFORE + n + 1)) && $READY == True && -n $RUNNING_AT ]]
}

# backoff_gaps: GAPS (measured seconds, space-separated) and GAPS_OK (0/1)
# against the doubling, from LIVES and the running start.
backoff_gaps() {
  local i finished next expected=0 gap tol ok=1 text="" f s life next_life
  local pct=${hyp[crashloop.gap_tolerance_pct]} least=${hyp[crashloop.gap_tolerance_s]}
  GAPS=""
  UNSEEN=0
  for ((i = 0; i < ${#LIVES[@]}; i++)); do
    IFS='=' read -r finished _ life _ <<<"${LIVES[$i]}"
    if ((i + 1 < ${#LIVES[@]})); then
      IFS='=' read -r _ next next_life _ <<<"${LIVES[$((i + 1))]}"
    else
      next=$RUNNING_AT
      next_life=$RESTARTS
    fi
    if ((next_life > life + 1)); then
      # Lives unseen between two polls: this is not one back-off.
      UNSEEN=$((UNSEEN + next_life - life - 1))
      text+="${text:+, }not measured ($((next_life - life - 1)) life/lives began and ended between two polls)"
      ok=0
      ((expected == 0)) || expected=$((expected << (next_life - life)))
      continue
    fi
    epoch "$finished"; f=$REPLY
    epoch "$next"; s=$REPLY
    [[ -n $f && -n $s ]] || continue
    gap=$((s - f))
    if ((expected == 0)); then
      # The doubling starts at the first gap: 0 (a first crash is restarted
      # at once: not compared), else the nearest of 10, 20, 40 ... 300.
      if ((gap < 5)); then
        text+="${text:+, }${gap} s (at once)"
        GAPS+="$gap "
        expected=10
        continue
      fi
      expected=10
      while ((expected < 300 && gap > expected * 3 / 2)); do expected=$((expected * 2)); done
    fi
    ((expected <= 300)) || expected=300
    tol=$((expected * pct / 100))
    ((tol >= least)) || tol=$least
    GAPS+="$gap "
    if ((gap < expected - tol || gap > expected + tol)); then
      ok=0
      text+="${text:+, }${gap} s (expected ${expected} ± ${tol}: off)"
    else
      text+="${text:+, }${gap} s (expected ${expected})"
    fi
    expected=$((expected * 2))
  done
  GAPS_OK=$ok
  GAPS_TEXT=$text
}

run_crashloop() {
  ROW=crashloop
  local n=${hyp[crashloop.starts]}
  life_state "$pod"
  RESTARTS_BEFORE=${RESTARTS:-0}
  FINISHED_BEFORE=$LAST_FINISHED
  LIVES=()
  SEEN_BACKOFF=0
  note crashloop before "pod=$pod" "restartCount=$RESTARTS_BEFORE" "lastFinishedAt=$LAST_FINISHED"
  trigger "/fault/crashloop?starts=$n" "@(2??|000)" || return 0
  local hypothesis="CrashLoopBackOff seen, $n starts exit ${hyp[crashloop.exit_code]}, back-off gaps doubling (10, 20, 40 s ...), Ready within ${hyp[crashloop.within]} s"
  if ! wait_for "${hyp[crashloop.within]}" loop_over crashloop; then
    verdict crashloop "$hypothesis" "not over: restartCount ${RESTARTS:-?} (from $RESTARTS_BEFORE), Ready ${READY:-?}" FAIL
    return
  fi
  local ok=PASS measured codes="" life
  for life in "${LIVES[@]}"; do codes+="${codes:+,}${life##*=}"; done
  measured="Ready after $WAITED s, restartCount $RESTARTS_BEFORE -> $RESTARTS; exit codes seen $codes"
  if ((SEEN_BACKOFF)); then measured+="; CrashLoopBackOff seen"; else measured+="; CrashLoopBackOff never seen"; ok=FAIL; fi
  # The failing starts are the last n lives seen (the crash before them
  # may have been restarted too fast to be seen).
  backoff_gaps
  # The failing starts are the last n lives (the crash before them may have
  # been restarted too fast to be seen); a life unseen between two polls
  # is not a wrong code, but it is not a measured one either.
  local i bad=0
  for ((i = ${#LIVES[@]} - n + UNSEEN; i < ${#LIVES[@]}; i++)); do
    ((i >= 0)) || { bad=1; continue; }
    [[ ${LIVES[$i]##*=} == "${hyp[crashloop.exit_code]}" ]] || bad=1
  done
  ((bad == 0)) || { ok=FAIL; measured+=" (expected $n x ${hyp[crashloop.exit_code]})"; }
  ((UNSEEN == 0)) || { ok=FAIL; measured+="; $UNSEEN start(s) unseen between two polls (--poll $poll s)"; }
  measured+="; back-off gaps: ${GAPS_TEXT:-none measured}"
  ((GAPS_OK)) && [[ -n $GAPS_TEXT ]] || ok=FAIL
  note crashloop gaps "gaps_s=${GAPS% }"
  verdict crashloop "$hypothesis" "$measured" "$ok"
  reach "$pod" || true
}

# --- startup: a slow start under and over the startup probe's budget -----------
held_ready() { # the held start (restartCount TARGET) is Ready
  life_state "$pod"
  note "$ROW" observe "restartCount=$RESTARTS" "runningAt=$RUNNING_AT" "ready=$READY" "readyAt=$READY_AT" \
    "lastExitCode=$LAST_CODE" "lastStartedAt=$LAST_STARTED" "lastFinishedAt=$LAST_FINISHED"
  [[ -n $RESTARTS && $RESTARTS -ge $TARGET && $READY == True && -n $RUNNING_AT && -n $READY_AT ]]
}

# slow_start S RESTARTS: plans a slow start of S s, crashes, and waits until
# the start at restartCount before + RESTARTS is Ready.
slow_start() {
  life_state "$pod"
  local before=${RESTARTS:-0} code
  TARGET=$((before + $2))
  note startup before "pod=$pod" "restartCount=$before" "seconds=$1"
  trigger "/fault/slowstart?seconds=$1&starts=1" 202 || return 1
  code=$(chaos POST /crash)
  note startup crash "code=$code"
  wait_for "${hyp[startup.within]}" held_ready startup
}

run_startup() {
  ROW=startup
  local under=${hyp[startup.under_seconds]} over=${hyp[startup.over_seconds]} budget=${hyp[startup.budget_s]}
  local slack=${hyp[startup.ready_slack_s]} stop=${hyp[startup.stop_slack_s]} ok=PASS measured held
  local hypothesis="${under} s: Ready ${under} to $((under + slack)) s after its start, no restart; ${over} s: stopped ${budget} to $((budget + stop)) s after its start, the next start Ready within ${slack} s"
  if ! slow_start "$under" 1; then
    [[ ${#ROW_V[@]} -eq 4 ]] || verdict startup "$hypothesis" "${under} s: not Ready within ${hyp[startup.within]} s" FAIL
    return
  fi
  epoch "$READY_AT"; held=$REPLY
  epoch "$RUNNING_AT"; held=$((held - REPLY))
  measured="${under} s: Ready ${held} s after its start"
  if ((RESTARTS != TARGET)); then
    ok=FAIL
    measured+=", restarted again ($RESTARTS)"
  fi
  ((held >= under && held <= under + slack)) || ok=FAIL
  reach "$pod" || true
  if ! slow_start "$over" 2; then
    verdict startup "$hypothesis" "$measured; ${over} s: no restart and Ready within ${hyp[startup.within]} s" FAIL
    return
  fi
  local killed ready_after
  epoch "$LAST_FINISHED"; killed=$REPLY
  epoch "$LAST_STARTED"; killed=$((killed - REPLY))
  epoch "$READY_AT"; ready_after=$REPLY
  epoch "$RUNNING_AT"; ready_after=$((ready_after - REPLY))
  measured+="; ${over} s: stopped ${killed} s after its start (exit code ${LAST_CODE:-?}), the next start Ready ${ready_after} s after it"
  ((killed >= budget && killed <= budget + stop && ready_after <= slack)) || ok=FAIL
  verdict startup "$hypothesis" "$measured" "$ok"
  reach "$pod" || true
}

# The page alert of the GET / error budget is firing (its expression is
# true: the rule has no `for`) for the namespace, on --prometheus.
budget_burning() {
  local body
  body=$(curl -s --max-time 10 -G "$prometheus/api/v1/query" \
    --data-urlencode "query=ALERTS{alertname=\"ChaosBackendErrorBudgetBurn\", namespace=\"$namespace\"}" 2>/dev/null) || body=""
  note "$ROW" observe "prometheus_alerts=${body:0:300}"
  [[ $body == *'"result":[{'* ]]
}

run_errors() {
  ROW=errors
  pod_before errors
  trigger "/fault/errors?percent=${hyp[errors.percent]}&mode=${hyp[errors.mode]}&duration=${hyp[errors.fault_seconds]}" 202 || return 0
  local ok=PASS measured hypothesis="the pod stays Ready in the Service without a restart"
  if [[ -n $prometheus ]]; then
    hypothesis+=", ChaosBackendErrorBudgetBurn true within ${hyp[errors.alert_within]} s"
    if wait_for "${hyp[errors.alert_within]}" budget_burning errors; then
      measured="ChaosBackendErrorBudgetBurn true after $WAITED s"
    else
      measured="ChaosBackendErrorBudgetBurn not true within ${hyp[errors.alert_within]} s"
      ok=FAIL
    fi
  else
    sleep "${hyp[errors.watch_seconds]}" &
    wait $! || true
    measured="alert not checked (no --prometheus)"
  fi
  endpoint_state "$POD_IP_BEFORE"
  pod_state "$pod"
  note errors observe "endpoint=$ENDPOINT" "restartCount=$RESTARTS"
  if [[ $ENDPOINT != ready ]]; then
    measured+="; the endpoint left the Service ($ENDPOINT)"
    ok=FAIL
  fi
  if [[ ${RESTARTS:-0} -ne $RESTARTS_BEFORE ]]; then
    measured+="; the pod restarted"
    ok=FAIL
  fi
  note errors release "code=$(chaos DELETE /fault/errors)"
  verdict errors "$hypothesis" "$measured" "$ok"
}

pick_pod
pod=$PICKED
[[ -n $pod ]] || { echo "validate-matrix.sh: no Ready pod matches $selector in $namespace" >&2; exit 1; }
if ((observer)); then
  observer_image=${observer_image:-$PICKED_IMAGE}
  [[ -n $observer_image ]] || { echo "validate-matrix.sh: cannot tell the image of $pod: give --observer-image" >&2; exit 1; }
  observer_target
fi
note all start "namespace=$namespace" "pod=$pod" "rows=$rows" "observer_url=${observer_url:-none}"
reach "$pod"
for r in "${selected[@]}"; do
  ROW_V=()
  observer_start "$r"
  case "$r" in
    crash) restart_row crash /crash crash.restart_within crash.ready_within ;;
    oom) restart_row oom "${hyp[oom.trigger]}" oom.within oom.ready_within ;;
    degraded) run_degraded ;;
    hpa) run_hpa ;;
    evict) run_evict ;;
    crashloop) run_crashloop ;;
    startup) run_startup ;;
    errors) run_errors ;;
  esac
  finish_row "$r"
done
print_verdicts
exit "$failed"

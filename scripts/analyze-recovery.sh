#!/usr/bin/env bash
# analyze-recovery.sh: statistics and an SLA verdict for chaos runs, from the
# results CSV of chaos-generator.sh and/or the service's own histograms.
# Needs only bash, awk and coreutils (and curl for --metrics-url).
set -euo pipefail

readonly HEADER="iteration,type,triggered_at_ms,detected_s,recovered_s,outcome,detail"

usage() {
  cat <<'USAGE'
Usage: scripts/analyze-recovery.sh [options] [RESULTS.csv ...]

Reads one or more results files of chaos-generator.sh, and/or the
histograms of a running service, and prints for recovery and for detection:
count, mean, p50, p95 and worst; SLA compliance; outcome counts; a verdict.

Options:
  --metrics-url URL   read failure_to_readiness_failure_seconds and
                      readiness_failure_to_recovery_seconds from URL (for
                      example http://localhost:8080/metrics)
  --sla S             recovery SLA in seconds (default 10)
  --target PCT        compliance needed to PASS, in percent (default 95)
  --min-samples N     fewer detected faults than this is INCONCLUSIVE (default 10)
  --format FMT        text, json or markdown (default text)
  -h, --help          this help

How it counts (CSV):
  Detected faults are the rows whose fault showed: outcome recovered or
  timeout (not no-degradation, not trigger-failed). SLA compliance is the
  share of detected faults that recovered within --sla; a timeout is a miss.
  Percentiles are nearest-rank: the p-th percentile of n sorted values is
  the value at rank ceil(p/100 * n).

How it counts (--metrics-url):
  The histograms hold only what the running instance saw (a restart empties
  them), and a degradation that never recovered is in neither. The mean is
  sum/count; p50 and p95 interpolate within buckets as Prometheus's
  histogram_quantile does; worst is the upper bound of the highest non-empty
  bucket; within-SLA counts the bucket whose bound is the largest one <= --sla
  (a lower bound when --sla is not a bucket bound).

Verdict and exit status:
  0  PASS          compliance >= target, with at least --min-samples
  1  FAIL          compliance < target, with at least --min-samples
  3  INCONCLUSIVE  fewer than --min-samples detected faults
  2  bad input     bad option, unreadable file, or a malformed row (named
                   by file and line)
With several sources, FAIL wins over INCONCLUSIVE, which wins over PASS.
USAGE
}

die() {
  echo "analyze-recovery.sh: $1" >&2
  exit 2
}

sla=10
target=95
min_samples=10
format=text
metrics_url=""
files=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --metrics-url) [[ $# -ge 2 ]] || die "--metrics-url needs a value"; metrics_url="$2"; shift 2 ;;
    --sla) [[ $# -ge 2 ]] || die "--sla needs a value"; sla="$2"; shift 2 ;;
    --target) [[ $# -ge 2 ]] || die "--target needs a value"; target="$2"; shift 2 ;;
    --min-samples) [[ $# -ge 2 ]] || die "--min-samples needs a value"; min_samples="$2"; shift 2 ;;
    --format) [[ $# -ge 2 ]] || die "--format needs a value"; format="$2"; shift 2 ;;
    --) shift; files+=("$@"); break ;;
    -*) die "unknown option \"$1\" (try --help)" ;;
    *) files+=("$1"); shift ;;
  esac
done

number='^[0-9]+([.][0-9]+)?$'
[[ $sla =~ $number ]] || die "--sla \"$sla\": expected a number of seconds"
if ! [[ $target =~ $number ]] || ! awk -v t="$target" 'BEGIN { exit !(t <= 100) }'; then
  die "--target \"$target\": expected a percentage from 0 to 100"
fi
[[ $min_samples =~ ^[0-9]+$ ]] || die "--min-samples \"$min_samples\": expected a whole number"
case "$format" in text | json | markdown) ;; *) die "--format \"$format\": expected text, json or markdown" ;; esac
((${#files[@]} > 0)) || [[ -n $metrics_url ]] || die "nothing to read: give results files and/or --metrics-url (try --help)"
for f in "${files[@]}"; do
  [[ -f $f && -r $f ]] || die "cannot read \"$f\""
done

# Shared awk: nearest-rank percentile and number formatting.
readonly AWK_LIB='
function sort(a, n,    i, j, v) { for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v } }
function rank(a, n, p,    r) { r = int(p / 100 * n); if (r < p / 100 * n) r++; if (r < 1) r = 1; return a[r] }
function f3(x) { return sprintf("%.3f", x) }
'

# One source's figures as key=value lines; stats() turns them into output.
csv_figures() {
  awk -F',' -v header="$HEADER" -v sla="$sla" "$AWK_LIB"'
    function bad(msg) { printf "%s:%d: %s\n", FILENAME, FNR, msg > "/dev/stderr"; failed = 1; exit 2 }
    FNR == 1 { if ($0 != header) bad("expected the header \"" header "\", found \"" $0 "\""); next }
    /^[[:space:]]*$/ { next }
    {
      if (NF != 7) bad("expected 7 comma-separated fields, found " NF)
      if ($1 !~ /^[0-9]+$/) bad("iteration \"" $1 "\" is not a whole number")
      if ($2 !~ /^[a-z][a-z0-9-]*$/) bad("type \"" $2 "\" is not a fault type")
      if ($3 !~ /^[0-9]+$/) bad("triggered_at_ms \"" $3 "\" is not a whole number")
      if ($4 != "" && $4 !~ /^[0-9]+([.][0-9]+)?$/) bad("detected_s \"" $4 "\" is not a number of seconds")
      if ($5 != "" && $5 !~ /^[0-9]+([.][0-9]+)?$/) bad("recovered_s \"" $5 "\" is not a number of seconds")
      o = $6
      if (o == "recovered") { if ($4 == "" || $5 == "") bad("a recovered row needs detected_s and recovered_s") }
      else if (o == "timeout") { if ($4 == "" || $5 != "") bad("a timeout row needs detected_s and no recovered_s") }
      else if (o == "no-degradation" || o == "trigger-failed") { if ($4 != "" || $5 != "") bad("a " o " row has no detected_s or recovered_s") }
      else bad("outcome \"" o "\" is not recovered, no-degradation, timeout or trigger-failed")
      rows++; count[o]++; types[$2] = 1
      if ($4 != "") { nd++; det[nd] = $4 + 0; dsum += $4 }
      if (o == "recovered") { nr++; rec[nr] = $5 + 0; rsum += $5; if ($5 + 0 <= sla + 0) within++ }
    }
    END {
      if (failed) exit 2
      t = ""; for (k in types) t = t (t == "" ? "" : "+") k
      print "kind=csv"
      print "rows=" rows + 0
      print "types=" t
      for (k in count) print "outcome_" k "=" count[k]
      print "detected=" nd + 0
      print "within_sla=" within + 0
      print "sla_basis=exact"
      print "rec_n=" nr + 0
      if (nr) { sort(rec, nr); print "rec_mean=" f3(rsum / nr); print "rec_p50=" f3(rank(rec, nr, 50)); print "rec_p95=" f3(rank(rec, nr, 95)); print "rec_worst=" f3(rec[nr]) }
      print "det_n=" nd + 0
      if (nd) { sort(det, nd); print "det_mean=" f3(dsum / nd); print "det_p50=" f3(rank(det, nd, 50)); print "det_p95=" f3(rank(det, nd, 95)); print "det_worst=" f3(det[nd]) }
    }' "$@"
}

metrics_figures() {
  local body
  body=$(curl -sf --max-time 10 "$1") || die "cannot read --metrics-url \"$1\""
  grep -q '^readiness_failure_to_recovery_seconds_count ' <<<"$body" ||
    die "--metrics-url \"$1\" has no readiness_failure_to_recovery_seconds histogram"
  awk -v sla="$sla" "$AWK_LIB"'
    # histogram_quantile: linear interpolation within the bucket that holds q.
    function quantile(q, name,    i, want, lo, prev) {
      if (total[name] == 0) return ""
      want = q * total[name]; lo = 0; prev = 0
      for (i = 1; i <= nb[name]; i++) {
        if (cum[name, i] >= want) {
          if (le[name, i] == "+Inf") return f3(lo)
          return f3(lo + (le[name, i] - lo) * (want - prev) / (cum[name, i] - prev))
        }
        lo = le[name, i]; prev = cum[name, i]
      }
      return f3(lo)
    }
    function worst(name,    i, w) {
      w = ""; for (i = 1; i <= nb[name]; i++) if (cum[name, i] > (i > 1 ? cum[name, i - 1] : 0)) w = le[name, i]
      return w == "+Inf" ? ">" le[name, nb[name] - 1] : "<=" w
    }
    match($0, /^(readiness_failure_to_recovery|failure_to_readiness_failure)_seconds_bucket\{le="[^"]+"\} /) {
      name = substr($1, 1, index($1, "_seconds_bucket") - 1)
      b = $1; sub(/.*le="/, "", b); sub(/".*/, "", b)
      nb[name]++; le[name, nb[name]] = b; cum[name, nb[name]] = $2 + 0
      if (b != "+Inf" && b + 0 <= sla + 0) { within[name] = $2 + 0; basis[name] = b }
      next
    }
    $1 ~ /^(readiness_failure_to_recovery|failure_to_readiness_failure)_seconds_(sum|count)$/ {
      n = $1; sub(/_seconds_(sum|count)$/, "", n)
      if ($1 ~ /_sum$/) sum[n] = $2 + 0; else total[n] = $2 + 0
    }
    END {
      r = "readiness_failure_to_recovery"; d = "failure_to_readiness_failure"
      print "kind=metrics"
      print "rows=" total[r] + 0
      print "types=all"
      print "detected=" total[r] + 0
      print "within_sla=" within[r] + 0
      print "sla_basis=" (basis[r] == "" ? "none" : "le=" basis[r])
      print "rec_n=" total[r] + 0
      if (total[r]) { print "rec_mean=" f3(sum[r] / total[r]); print "rec_p50=" quantile(0.5, r); print "rec_p95=" quantile(0.95, r); print "rec_worst=" worst(r) }
      print "det_n=" total[d] + 0
      if (total[d]) { print "det_mean=" f3(sum[d] / total[d]); print "det_p50=" quantile(0.5, d); print "det_p95=" quantile(0.95, d); print "det_worst=" worst(d) }
    }' <<<"$body"
}

# Reads key=value lines into the associative array `fig`, adds the verdict.
declare -A fig
load_figures() {
  fig=()
  local line
  while IFS= read -r line; do
    fig[${line%%=*}]=${line#*=}
  done
  local detected=${fig[detected]:-0}
  if ((detected > 0)); then
    fig[compliance]=$(awk -v w="${fig[within_sla]}" -v n="$detected" 'BEGIN { printf "%.2f", 100 * w / n }')
  else
    fig[compliance]=""
  fi
  if ((detected < min_samples)); then
    fig[verdict]=INCONCLUSIVE
  elif awk -v c="${fig[compliance]}" -v t="$target" 'BEGIN { exit !(c + 0 >= t + 0) }'; then
    fig[verdict]=PASS
  else
    fig[verdict]=FAIL
  fi
}

v() { REPLY=${fig[$1]:-}; [[ -n $REPLY ]] || REPLY="n/a"; }

print_text() { # label
  local k
  echo "source: $1"
  if [[ ${fig[kind]} == csv ]]; then
    echo "iterations: ${fig[rows]} (recovered ${fig[outcome_recovered]:-0}, timeout ${fig[outcome_timeout]:-0}, no-degradation ${fig[outcome_no-degradation]:-0}, trigger-failed ${fig[outcome_trigger-failed]:-0}); types: ${fig[types]:-none}"
  else
    echo "recoveries: ${fig[rec_n]}, detections: ${fig[det_n]} (histograms of the running instance)"
  fi
  for k in rec det; do
    local name=recovery
    [[ $k == rec ]] || name=detection
    v "${k}_mean"; local mean=$REPLY
    v "${k}_p50"; local p50=$REPLY
    v "${k}_p95"; local p95=$REPLY
    v "${k}_worst"; local worst=$REPLY
    echo "$name (s): n ${fig[${k}_n]}, mean $mean, p50 $p50, p95 $p95, worst $worst"
  done
  v compliance
  echo "SLA: ${fig[within_sla]} of ${fig[detected]} detected faults recovered within ${sla} s = ${REPLY}% (target ${target}%, basis ${fig[sla_basis]})"
  echo "verdict: ${fig[verdict]}"
}

json_string() { # escapes a value for JSON
  local s=${1//\\/\\\\}
  REPLY="\"${s//\"/\\\"}\""
}

json_value() { # key -> number, string or null
  local x=${fig[$1]:-}
  if [[ -z $x ]]; then
    REPLY=null
  elif [[ $x =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    REPLY=$x
  else
    json_string "$x"
  fi
}

print_json_source() { # label
  local out k
  json_string "$1"
  out="{\"source\":$REPLY"
  for k in kind rows types detected within_sla sla_basis compliance verdict \
    rec_n rec_mean rec_p50 rec_p95 rec_worst det_n det_mean det_p50 det_p95 det_worst; do
    json_value "$k"
    out+=",\"$k\":$REPLY"
  done
  out+=",\"outcomes\":{"
  local first=1
  for k in recovered timeout no-degradation trigger-failed; do
    ((first)) || out+=","
    first=0
    out+="\"$k\":${fig[outcome_$k]:-0}"
  done
  REPLY="$out}}"
}

print_markdown() { # label
  local k
  echo "### $1"
  echo
  echo "| figure | recovery (s) | detection (s) |"
  echo "|---|---|---|"
  for k in n mean p50 p95 worst; do
    v "rec_$k"; local r=$REPLY
    v "det_$k"; local d=$REPLY
    echo "| $k | $r | $d |"
  done
  echo
  v compliance
  echo "| SLA | value |"
  echo "|---|---|"
  echo "| recovered within ${sla} s | ${fig[within_sla]} of ${fig[detected]} detected (${REPLY}%) |"
  echo "| target | ${target}% |"
  if [[ ${fig[kind]} == csv ]]; then
    echo "| outcomes | recovered ${fig[outcome_recovered]:-0}, timeout ${fig[outcome_timeout]:-0}, no-degradation ${fig[outcome_no-degradation]:-0}, trigger-failed ${fig[outcome_trigger-failed]:-0} |"
  fi
  echo "| verdict | **${fig[verdict]}** |"
  echo
}

# --- main ---------------------------------------------------------------------
labels=()
figure_sets=()
if ((${#files[@]} > 0)); then
  set +e
  csv=$(csv_figures "${files[@]}")
  rc=$?
  set -e
  ((rc == 0)) || exit 2
  labels+=("${files[*]}")
  figure_sets+=("$csv")
fi
if [[ -n $metrics_url ]]; then
  labels+=("$metrics_url")
  figure_sets+=("$(metrics_figures "$metrics_url")")
fi

overall=PASS
json_sources=()
for i in "${!labels[@]}"; do
  load_figures <<<"${figure_sets[$i]}"
  case "${fig[verdict]}" in
    FAIL) overall=FAIL ;;
    INCONCLUSIVE) [[ $overall == FAIL ]] || overall=INCONCLUSIVE ;;
  esac
  case "$format" in
    text) ((i == 0)) || echo; print_text "${labels[$i]}" ;;
    markdown) print_markdown "${labels[$i]}" ;;
    json) print_json_source "${labels[$i]}"; json_sources+=("$REPLY") ;;
  esac
done
if [[ $format == json ]]; then
  joined=$(IFS=,; echo "${json_sources[*]}")
  printf '{"sla_seconds":%s,"target_percent":%s,"min_samples":%s,"sources":[%s],"verdict":"%s"}\n' \
    "$sla" "$target" "$min_samples" "$joined" "$overall"
elif ((${#labels[@]} > 1)); then
  echo "overall verdict: $overall"
fi

case "$overall" in
  PASS) exit 0 ;;
  FAIL) exit 1 ;;
  *) exit 3 ;;
esac

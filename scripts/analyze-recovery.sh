#!/usr/bin/env bash
# analyze-recovery.sh: statistics and an SLA verdict for chaos runs, from the
# results CSV of chaos-generator.sh and/or the service's own histograms,
# broken down by fault type. Needs only bash, awk and coreutils (and curl for
# --metrics-url).
set -euo pipefail

readonly HEADER="iteration,type,triggered_at_ms,detected_s,degraded_s,recovered_s,outcome,detail"
readonly OLD_HEADER="iteration,type,triggered_at_ms,detected_s,recovered_s,outcome,detail"

usage() {
  cat <<'USAGE'
Usage: scripts/analyze-recovery.sh [options] [RESULTS.csv ...]

Reads one or more results files of chaos-generator.sh, and/or the
histograms of a running service, and prints, for all faults together and
for each fault type: recovery (the fault's end to ready), degraded time
(first failure to the fault's end) and detection (trigger to first failure),
each as count, mean, p50, p95 and worst; SLA compliance; outcome counts; a
verdict.

Options:
  --metrics-url URL   read the service's histograms from URL (for example
                      http://localhost:8080/metrics): fault_end_to_recovery_seconds
                      (recovery, by fault), readiness_failure_to_recovery_seconds
                      (degraded) and failure_to_readiness_failure_seconds
                      (detection)
  --sla S             recovery SLA in seconds (default 10)
  --target PCT        compliance needed to PASS, in percent (default 95)
  --min-samples N     fewer detected faults than this is INCONCLUSIVE, and a
                      figure with fewer samples is given as its values, not
                      percentiles (default 10)
  --format FMT        text, json or markdown (default text)
  -h, --help          this help

How it counts (CSV):
  Detected faults are the rows whose fault showed: outcome recovered or
  timeout (not no-degradation, not trigger-failed). SLA compliance is the
  share of detected faults that recovered within --sla of their fault's end
  (recovered_s); a timeout is a miss. Percentiles are nearest-rank: the p-th
  percentile of n sorted values is the value at rank ceil(p/100 * n). Under
  --min-samples values a percentile says little: each value is printed
  instead, with the count. Files written before degraded_s existed (their
  recovered_s was first failure to ready) are refused, not mixed in.

How it counts (--metrics-url):
  The histograms hold what this pod saw, across its container's restarts (a
  new pod starts from zero); a degradation that never recovered is in none.
  The mean is sum/count; p50 and p95 interpolate within buckets as
  Prometheus's histogram_quantile does; worst is the upper bound of the
  highest non-empty bucket; within-SLA counts the bucket whose bound is the
  largest one <= --sla (a lower bound when --sla is not a bucket bound).
  Under --min-samples the buckets are printed instead of percentiles.

Verdict and exit status (from all faults of a source together; each type's
own verdict is printed beside it):
  0  PASS          compliance >= target, with at least --min-samples
  1  FAIL          compliance < target, with at least --min-samples
  3  INCONCLUSIVE  fewer than --min-samples detected faults, or none
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

# Shared awk: sorting, nearest-rank percentile, number formatting, and the
# figures of one series of values ("rec", "deg", "det") of one group.
readonly AWK_LIB='
function sort(a, n,    i, j, v) { for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v } }
function rank(a, n, p,    r) { r = int(p / 100 * n); if (r < p / 100 * n) r++; if (r < 1) r = 1; return a[r] }
function f3(x) { return sprintf("%.3f", x) }
function out(g, k, v) { printf "%s\t%s=%s\n", g, k, v }
# Prints n, mean, worst, and p50/p95 (or, under min, every value) of a[1..n].
function series(g, name, a, n,    i, sum, vals) {
  out(g, name "_n", n)
  if (!n) return
  sort(a, n); sum = 0; vals = ""
  for (i = 1; i <= n; i++) { sum += a[i]; vals = vals (i > 1 ? " " : "") f3(a[i]) }
  out(g, name "_mean", f3(sum / n)); out(g, name "_worst", f3(a[n]))
  if (n >= min) { out(g, name "_p50", f3(rank(a, n, 50))); out(g, name "_p95", f3(rank(a, n, 95))) }
  else out(g, name "_values", vals)
}
'

# One source's figures as "GROUP<TAB>key=value" lines, GROUP being "all" or
# a fault type; stats() turns them into output.
csv_figures() {
  awk -F',' -v header="$HEADER" -v old="$OLD_HEADER" -v sla="$sla" -v min="$min_samples" "$AWK_LIB"'
    function bad(msg) { printf "%s:%d: %s\n", FILENAME, FNR, msg > "/dev/stderr"; failed = 1; exit 2 }
    function add(g, name, v) { n[g, name]++; val[g, name, n[g, name]] = v }
    # A file saved with Windows line endings: the same rows.
    { sub(/\r$/, "") }
    FNR == 1 {
      if ($0 == old) bad("written by an older chaos-generator.sh: its recovered_s is the first failure to the next 200, not the fault'"'"'s end to it (today'"'"'s degraded_s + recovered_s); not mixed with newer rows")
      if ($0 != header) bad("expected the header \"" header "\", found \"" $0 "\"")
      next
    }
    /^[[:space:]]*$/ { next }
    {
      if (NF != 8) bad("expected 8 comma-separated fields, found " NF)
      if ($1 !~ /^[0-9]+$/) bad("iteration \"" $1 "\" is not a whole number")
      if ($2 !~ /^[a-z][a-z0-9-]*$/) bad("type \"" $2 "\" is not a fault type")
      if ($3 !~ /^[0-9]+$/) bad("triggered_at_ms \"" $3 "\" is not a whole number")
      if ($4 != "" && $4 !~ /^[0-9]+([.][0-9]+)?$/) bad("detected_s \"" $4 "\" is not a number of seconds")
      if ($5 != "" && $5 !~ /^[0-9]+([.][0-9]+)?$/) bad("degraded_s \"" $5 "\" is not a number of seconds")
      if ($6 != "" && $6 !~ /^[0-9]+([.][0-9]+)?$/) bad("recovered_s \"" $6 "\" is not a number of seconds")
      o = $7
      if (o == "recovered") { if ($4 == "" || $5 == "" || $6 == "") bad("a recovered row needs detected_s, degraded_s and recovered_s") }
      else if (o == "timeout") { if ($4 == "" || $6 != "") bad("a timeout row needs detected_s and no recovered_s") }
      else if (o == "no-degradation" || o == "trigger-failed") { if ($4 != "" || $5 != "" || $6 != "") bad("a " o " row has no detected_s, degraded_s or recovered_s") }
      else bad("outcome \"" o "\" is not recovered, no-degradation, timeout or trigger-failed")
      if (!($2 in seen)) { seen[$2] = 1; order[++types] = $2 }
      for (k = 0; k < 2; k++) {
        g = k ? $2 : "all"
        rows[g]++; count[g, o]++
        if ($4 != "") { detected[g]++; add(g, "det", $4 + 0) }
        if ($5 != "") add(g, "deg", $5 + 0)
        if (o == "recovered") { add(g, "rec", $6 + 0); if ($6 + 0 <= sla + 0) within[g]++ }
      }
    }
    END {
      if (failed) exit 2
      t = ""; for (i = 1; i <= types; i++) t = t (i > 1 ? " " : "") order[i]
      out("all", "kind", "csv"); out("all", "types", t)
      for (i = 0; i <= types; i++) {
        g = i ? order[i] : "all"
        out(g, "rows", rows[g] + 0)
        split("recovered timeout no-degradation trigger-failed", os, " ")
        for (j = 1; j <= 4; j++) out(g, "outcome_" os[j], count[g, os[j]] + 0)
        out(g, "detected", detected[g] + 0); out(g, "within_sla", within[g] + 0); out(g, "sla_basis", "exact")
        split("rec deg det", names, " ")
        for (j = 1; j <= 3; j++) {
          m = n[g, names[j]] + 0; delete a
          for (k = 1; k <= m; k++) a[k] = val[g, names[j], k]
          series(g, names[j], a, m)
        }
      }
    }' "$@"
}

metrics_figures() {
  local body
  body=$(curl -sf --max-time 10 "$1") || die "cannot read --metrics-url \"$1\""
  grep -q '^fault_end_to_recovery_seconds_count' <<<"$body" ||
    die "--metrics-url \"$1\" has no fault_end_to_recovery_seconds histogram"
  awk -v sla="$sla" -v min="$min_samples" "$AWK_LIB"'
    # histogram_quantile: linear interpolation within the bucket that holds q.
    function quantile(q, s,    i, want, lo, prev) {
      want = q * total[s]; lo = 0; prev = 0
      for (i = 1; i <= nb[s]; i++) {
        if (cum[s, i] >= want) {
          if (le[s, i] == "+Inf") return f3(lo)
          return f3(lo + (le[s, i] - lo) * (want - prev) / (cum[s, i] - prev))
        }
        lo = le[s, i]; prev = cum[s, i]
      }
      return f3(lo)
    }
    function worst(s,    i, w) {
      w = ""; for (i = 1; i <= nb[s]; i++) if (cum[s, i] > (i > 1 ? cum[s, i - 1] : 0)) w = le[s, i]
      return w == "+Inf" ? ">" le[s, nb[s] - 1] : "<=" w
    }
    # The non-empty buckets, as "N in (lo, hi]".
    function buckets(s,    i, lo, d, text) {
      lo = 0; text = ""
      for (i = 1; i <= nb[s]; i++) {
        d = cum[s, i] - (i > 1 ? cum[s, i - 1] : 0)
        if (d > 0) text = text (text == "" ? "" : "; ") d " in (" lo ", " le[s, i] "]"
        lo = le[s, i]
      }
      return text
    }
    function figures(g, name, s) {
      out(g, name "_n", total[s] + 0)
      if (!total[s]) return
      out(g, name "_mean", f3(sum[s] / total[s])); out(g, name "_worst", worst(s))
      if (total[s] >= min) { out(g, name "_p50", quantile(0.5, s)); out(g, name "_p95", quantile(0.95, s)) }
      else out(g, name "_values", buckets(s))
    }
    # A series: its family, and its fault label when it has one.
    function key(text,    f, l) {
      f = text; sub(/_(bucket|sum|count)(\{.*)?$/, "", f)
      l = ""; if (text ~ /fault="/) { l = text; sub(/.*fault="/, "", l); sub(/".*/, "", l) }
      return f SUBSEP l
    }
    /^(fault_end_to_recovery|readiness_failure_to_recovery|failure_to_readiness_failure)_seconds_bucket\{/ {
      s = key($1); b = $1; sub(/.*le="/, "", b); sub(/".*/, "", b)
      nb[s]++; le[s, nb[s]] = b; cum[s, nb[s]] = $2 + 0
      if ($1 ~ /^fault_end/ && b != "+Inf" && b + 0 <= sla + 0) { within[s] = $2 + 0; basis = b }
      next
    }
    /^(fault_end_to_recovery|readiness_failure_to_recovery|failure_to_readiness_failure)_seconds_(sum|count)[{ ]/ {
      s = key($1)
      if ($1 ~ /_sum/) sum[s] = $2 + 0; else total[s] = $2 + 0
      if ($1 ~ /^fault_end/) { split(s, p, SUBSEP); faults[p[2]] = 1 }
    }
    END {
      f = "fault_end_to_recovery_seconds"
      # All faults: the per-fault series added up, bucket by bucket.
      a = f SUBSEP "all"; nb[a] = 0
      types = ""
      for (l in faults) {
        s = f SUBSEP l
        if (total[s] > 0) types = types (types == "" ? "" : " ") l
        total[a] += total[s]; sum[a] += sum[s]; w += within[s]
        for (i = 1; i <= nb[s]; i++) { le[a, i] = le[s, i]; cum[a, i] += cum[s, i] }
        if (nb[s] > nb[a]) nb[a] = nb[s]
      }
      out("all", "kind", "metrics"); out("all", "types", types)
      out("all", "rows", total[a] + 0); out("all", "detected", total[a] + 0)
      out("all", "within_sla", w + 0); out("all", "sla_basis", basis == "" ? "none" : "le=" basis)
      figures("all", "rec", a)
      figures("all", "deg", "readiness_failure_to_recovery_seconds" SUBSEP "")
      figures("all", "det", "failure_to_readiness_failure_seconds" SUBSEP "")
      n = split(types, ts, " ")
      for (i = 1; i <= n; i++) {
        s = f SUBSEP ts[i]
        out(ts[i], "rows", total[s]); out(ts[i], "detected", total[s])
        out(ts[i], "within_sla", within[s] + 0); out(ts[i], "sla_basis", basis == "" ? "none" : "le=" basis)
        figures(ts[i], "rec", s)
      }
    }' <<<"$body"
}

# Figures of one group of one source, in the associative array `fig`.
declare -A fig
# Fills `fig` with the lines of `figure_lines` for GROUP (and the source's
# own keys), and adds compliance and the verdict.
load_group() { # group
  fig=()
  local g k v
  while IFS=$'\t' read -r g k; do
    [[ $g == "$1" || ($g == all && ($k == kind=* || $k == types=*)) ]] || continue
    v=${k#*=}
    fig[${k%%=*}]=$v
  done <<<"$figure_lines"
  local detected=${fig[detected]:-0}
  if ((detected > 0)); then
    fig[compliance]=$(awk -v w="${fig[within_sla]}" -v n="$detected" 'BEGIN { printf "%.2f", 100 * w / n }')
  else
    fig[compliance]=""
  fi
  # No detected fault has no compliance to weigh, whatever --min-samples
  # (0 would otherwise make it FAIL, or PASS with --target 0).
  if ((detected < min_samples || detected == 0)); then
    fig[verdict]=INCONCLUSIVE
  elif awk -v c="${fig[compliance]}" -v t="$target" 'BEGIN { exit !(c + 0 >= t + 0) }'; then
    fig[verdict]=PASS
  else
    fig[verdict]=FAIL
  fi
}

# One figure ("rec", "deg", "det") as text: percentiles, or, under
# --min-samples, each value and why there are no percentiles.
figure_text() { # key
  local n=${fig[${1}_n]:-0}
  if ((n == 0)); then
    REPLY="n 0"
  elif [[ -n ${fig[${1}_values]:-} ]]; then
    REPLY="n $n, mean ${fig[${1}_mean]}, worst ${fig[${1}_worst]}; values: ${fig[${1}_values]} (no p50/p95: fewer than $min_samples samples, --min-samples)"
  else
    REPLY="n $n, mean ${fig[${1}_mean]}, p50 ${fig[${1}_p50]}, p95 ${fig[${1}_p95]}, worst ${fig[${1}_worst]}"
  fi
}

sla_text() {
  if [[ -z ${fig[compliance]} ]]; then
    REPLY="no detected faults, so no compliance (target ${target}%)"
  else
    REPLY="${fig[within_sla]} of ${fig[detected]} detected faults recovered within ${sla} s of their end = ${fig[compliance]}% (target ${target}%, basis ${fig[sla_basis]})"
  fi
}

outcomes_text() {
  REPLY="recovered ${fig[outcome_recovered]:-0}, timeout ${fig[outcome_timeout]:-0}, no-degradation ${fig[outcome_no-degradation]:-0}, trigger-failed ${fig[outcome_trigger-failed]:-0}"
}

print_text_group() { # heading
  echo "$1"
  if [[ ${fig[kind]} == csv ]]; then
    outcomes_text
    echo "  iterations: ${fig[rows]} ($REPLY)"
  else
    echo "  recoveries: ${fig[rec_n]} (this pod's histograms, across restarts)"
  fi
  local k name
  for k in rec deg det; do
    case $k in rec) name="recovery (s, fault's end to ready)" ;; deg) name="degraded (s, first failure to the fault's end)" ;; *) name="detection (s, trigger to first failure)" ;; esac
    [[ -n ${fig[${k}_n]:-} ]] || continue
    figure_text "$k"
    echo "  $name: $REPLY"
  done
  sla_text
  echo "  SLA: $REPLY"
  echo "  verdict: ${fig[verdict]}"
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

json_group() { # -> an object of the group's figures
  local out="{" k first=1
  for k in rows detected within_sla sla_basis compliance verdict \
    rec_n rec_mean rec_p50 rec_p95 rec_worst deg_n deg_mean deg_p50 deg_p95 deg_worst \
    det_n det_mean det_p50 det_p95 det_worst; do
    json_value "$k"
    ((first)) || out+=","
    first=0
    out+="\"$k\":$REPLY"
  done
  for k in rec deg det; do
    local values=${fig[${k}_values]:-}
    if [[ -n $values && ${fig[kind]} == csv ]]; then
      out+=",\"${k}_values\":[${values// /,}]"
    elif [[ -n $values ]]; then
      json_string "$values"
      out+=",\"${k}_values\":$REPLY"
    fi
  done
  if [[ ${fig[kind]} == csv ]]; then
    out+=",\"outcomes\":{"
    first=1
    for k in recovered timeout no-degradation trigger-failed; do
      ((first)) || out+=","
      first=0
      out+="\"$k\":${fig[outcome_$k]:-0}"
    done
    out+="}"
  fi
  REPLY="$out}"
}

print_markdown_group() { # heading
  local k r d e
  echo "$1"
  echo
  echo "| figure | recovery (s) | degraded (s) | detection (s) |"
  echo "|---|---|---|---|"
  for k in n mean p50 p95 worst values; do
    r=${fig[rec_$k]:-}
    d=${fig[deg_$k]:-}
    e=${fig[det_$k]:-}
    [[ -n $r$d$e ]] || continue
    echo "| $k | ${r:--} | ${d:--} | ${e:--} |"
  done
  if [[ -n ${fig[rec_values]:-}${fig[deg_values]:-}${fig[det_values]:-} ]]; then
    echo
    echo "No p50/p95 where fewer than $min_samples samples (--min-samples): each value is listed instead."
  fi
  echo
  sla_text
  echo "| SLA | value |"
  echo "|---|---|"
  echo "| recovered within ${sla} s | $REPLY |"
  if [[ ${fig[kind]} == csv ]]; then
    outcomes_text
    echo "| outcomes | $REPLY |"
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
  figure_lines=${figure_sets[$i]}
  load_group all
  verdict=${fig[verdict]}
  read -r -a types <<<"${fig[types]:-}"
  case "$verdict" in
    FAIL) overall=FAIL ;;
    INCONCLUSIVE) [[ $overall == FAIL ]] || overall=INCONCLUSIVE ;;
  esac
  case "$format" in
    text)
      ((i == 0)) || echo
      echo "source: ${labels[$i]}"
      echo "types: ${types[*]:-none}"
      print_text_group "all types:"
      for t in "${types[@]}"; do
        load_group "$t"
        print_text_group "type $t:"
      done
      echo "verdict: $verdict"
      ;;
    markdown)
      echo "### ${labels[$i]}"
      echo
      print_markdown_group "#### All types"
      for t in "${types[@]}"; do
        load_group "$t"
        print_markdown_group "#### $t"
      done
      ;;
    json)
      json_string "${labels[$i]}"
      src="{\"source\":$REPLY,\"kind\":\"${fig[kind]}\""
      json_group
      src+=",\"all\":$REPLY,\"types\":{"
      first=1
      for t in "${types[@]}"; do
        load_group "$t"
        json_group
        ((first)) || src+=","
        first=0
        src+="\"$t\":$REPLY"
      done
      json_sources+=("$src},\"verdict\":\"$verdict\"}")
      ;;
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

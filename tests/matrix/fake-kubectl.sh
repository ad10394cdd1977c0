#!/usr/bin/env bash
# Stands in for kubectl in tests/integration/matrix.rs: replays recorded
# `kubectl get -o json` outputs from $FIXTURES. For a kind K (the word after
# `get`), the n-th call prints K.n.json, or the highest-numbered file once
# they run out. Only `get` is recorded; the JSONPath extraction the script
# does afterwards runs in the real kubectl, on these objects.
set -euo pipefail
kind=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[$i]} == get ]]; then
    kind=${args[$((i + 1))]}
    break
  fi
done
[[ -n $kind ]] || { echo "fake-kubectl: only get is recorded: $*" >&2; exit 1; }
counter="$FIXTURES/.calls-$kind"
n=$(($(cat "$counter" 2>/dev/null || echo 0) + 1))
echo "$n" >"$counter"
file="$FIXTURES/$kind.$n.json"
if [[ ! -f $file ]]; then
  file=$(find "$FIXTURES" -maxdepth 1 -name "$kind.*.json" | sort -t. -k2 -n | tail -n 1)
fi
[[ -n $file ]] || { echo "fake-kubectl: no fixture for $kind" >&2; exit 1; }
cat "$file"

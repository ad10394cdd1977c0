#!/usr/bin/env bash
# Stands in for kubectl in tests/integration/matrix.rs: replays recorded
# answers from $FIXTURES. For `get` of a kind K (the word after `get`), the
# n-th call prints K.n.json, or the highest-numbered file once they run
# out. The JSONPath extraction the script does afterwards runs in the real
# kubectl, on these objects. For the observer pods: `create -f -` keeps the
# object it is given as created.n.json; `wait` and `delete` succeed and are
# recorded in .calls.log; the n-th `logs` prints observer.n.jsonl (or the
# highest-numbered one), as a finished pod's log.
set -euo pipefail
args=("$@")
verb=""
kind=""
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[$i]} in
    get | create | wait | logs | delete)
      verb=${args[$i]}
      kind=${args[$((i + 1))]:-}
      break
      ;;
  esac
done
# count NAME: the number of this call of NAME, from 1.
count() {
  local counter="$FIXTURES/.calls-$1" n
  n=$(($(cat "$counter" 2>/dev/null || echo 0) + 1))
  echo "$n" >"$counter"
  REPLY=$n
}
# replay NAME EXT: the n-th recorded answer, or the last one.
replay() {
  count "$1"
  local file="$FIXTURES/$1.$REPLY.$2"
  if [[ ! -f $file ]]; then
    file=$(find "$FIXTURES" -maxdepth 1 -name "$1.*.$2" | sort -t. -k2 -n | tail -n 1)
  fi
  [[ -n $file ]] || { echo "fake-kubectl: no fixture for $1" >&2; exit 1; }
  cat "$file"
}
printf '%s\n' "$*" >>"$FIXTURES/.calls.log"
case $verb in
  get) replay "$kind" json ;;
  create)
    count created
    cat >"$FIXTURES/created.$REPLY.json"
    echo "pod/observer created"
    ;;
  wait | delete) ;;
  logs) replay observer jsonl ;;
  *) echo "fake-kubectl: not recorded: $*" >&2; exit 1 ;;
esac

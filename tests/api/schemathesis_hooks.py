"""Schemathesis hooks for fuzzing chaos-backend (tests/integration/openapi.rs).

Fuzzing starts real faults: a CPU load, a leak, a disk fill, a latency or
liveness fault that would hold later answers. The test runs two passes:

- CHAOS_FUZZ_FAULTS=stop (the first pass): after every call the hook ends
  every fault with POST /chaos/stop, so each case meets an idle service and
  no case is slowed or refused because of the one before it.
- CHAOS_FUZZ_FAULTS=keep (the second pass): faults are never stopped between
  calls, so the answers that only occur while one runs (a stop that stops
  something, /health under a liveness fault, /ready's 503, a second disk
  fill's 409, a guardrail's 429) are checked against the document too. To
  keep the run bounded, every schema-valid duration, ramp and hold is cut to
  at most KEEP_SECONDS and every latency to at most KEEP_MS (an invalid value
  is left as generated, so negative cases stay negative), a leak without
  `hold` is given one, and a timed fault without `duration` is given one
  (its default is 60 s: a liveness hang would hold /health past the
  client's timeout): a fault ends by itself within seconds. The
  address-space limit the test sets bounds the leaks that overlap (beyond,
  a documented 507). Before each stop (`DELETE`, `POST /chaos/stop`) the hook
  starts the fault it stops, so that its "stopped" answer is always checked,
  whatever order the operations run in. An errors fault is kept to
  `mode=status` (its `code` as generated): a reset, a close or a stall of
  `GET /` answers nothing, which no document can describe and schemathesis
  would report as a network error; tests/integration/errors.rs checks those
  modes as a client sees them.
"""

import os
import urllib.error
import urllib.request

import schemathesis

BASE_URL = os.environ["CHAOS_FUZZ_URL"]
TOKEN = os.environ["CHAOS_FUZZ_TOKEN"]
FAULTS = os.environ.get("CHAOS_FUZZ_FAULTS", "stop")
if FAULTS not in ("stop", "keep"):
    raise RuntimeError(f"CHAOS_FUZZ_FAULTS must be stop or keep, not {FAULTS!r}")

KEEP_SECONDS = 2
KEEP_MS = 200
# (parameter, its schema maximum, the most the second pass lets it be)
CUT = {
    "duration": (3600, KEEP_SECONDS),
    "ramp": (3600, KEEP_SECONDS),
    "hold": (86400, KEEP_SECONDS),
    "ms": (60000, KEEP_MS),
}
# Timed faults whose `duration` has a default (60 s for the probe faults).
TIMED = ("/load/latency", "/fault/liveness", "/fault/readiness", "/fault/errors")
# The start each stop is preceded by, in the second pass.
PRIME = {
    ("DELETE", "/load/cpu"): ["/load/cpu?millicores=1&duration=2"],
    ("DELETE", "/load/memory"): ["/load/memory?mb=1&hold=2"],
    ("DELETE", "/load/disk"): ["/load/disk?mb=1"],
    ("DELETE", "/fault/liveness"): ["/fault/liveness?mode=hang&duration=2"],
    ("DELETE", "/fault/readiness"): ["/fault/readiness?duration=2"],
    ("DELETE", "/load/latency"): ["/load/latency?ms=50&duration=2"],
    ("DELETE", "/fault/errors"): ["/fault/errors?percent=50&duration=2"],
    ("POST", "/chaos/stop"): ["/load/cpu?millicores=1&duration=2", "/fault/readiness?duration=2"],
}


def send(method: str, target: str) -> int:
    request = urllib.request.Request(
        f"{BASE_URL}{target}",
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as refused:
        return refused.code


def stop_every_fault() -> None:
    status = send("POST", "/chaos/stop")
    if status != 200:
        raise RuntimeError(f"POST /chaos/stop answered {status}")


def cut(value, maximum: int, most: int):
    """`value` cut to `most` if it is a schema-valid whole number, else as is."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and 1 <= value <= maximum:
        return min(value, most)
    if isinstance(value, str) and value.isascii() and value.isdigit() and 1 <= int(value) <= maximum:
        return str(min(int(value), most))
    return value


@schemathesis.hook
def before_call(context, case, **kwargs):
    if FAULTS != "keep":
        return
    if case.query is None:
        case.query = {}
    query = case.query
    if isinstance(query, dict):
        for name, (maximum, most) in CUT.items():
            if name in query:
                query[name] = cut(query[name], maximum, most)
        if case.path == "/load/memory" and case.method.upper() == "POST" and "hold" not in query:
            query["hold"] = KEEP_SECONDS
        if case.path in TIMED and case.method.upper() == "POST" and "duration" not in query:
            query["duration"] = KEEP_SECONDS
        if case.path == "/fault/errors" and query.get("mode") in ("reset", "close", "stall"):
            query["mode"] = "status"
    for target in PRIME.get((case.method.upper(), case.path), []):
        # Refused (a guardrail's 429, a fill already there) is fine: the
        # stop then meets what runs already, or nothing.
        send("POST", target)


@schemathesis.hook
def after_call(context, case, response):
    if FAULTS == "stop":
        stop_every_fault()

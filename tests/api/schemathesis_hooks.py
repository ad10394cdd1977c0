"""Schemathesis hooks for fuzzing chaos-backend (tests/integration/openapi.rs).

Fuzzing starts real faults: a CPU load, a leak, a latency or liveness fault
that would hold later answers. After every call the hook ends them all with
POST /chaos/stop, so each case meets an idle service and no case is slowed
or refused because of the one before it.
"""

import os
import urllib.request

import schemathesis

BASE_URL = os.environ["CHAOS_FUZZ_URL"]
TOKEN = os.environ["CHAOS_FUZZ_TOKEN"]


def stop_every_fault() -> None:
    request = urllib.request.Request(
        f"{BASE_URL}/chaos/stop",
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"POST /chaos/stop answered {response.status}")


@schemathesis.hook
def after_call(context, case, response):
    stop_every_fault()

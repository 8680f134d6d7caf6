"""Worker process for `r1jax.rewards.math` calls made off the main thread.

Protocol: one JSON object per line on stdin, `{"pred": str | null, "gold": str}`; one JSON line back per request,
`[gold_parses, equal]`. Prints `ready` once sympy is imported. Exits at EOF on stdin (the parent closed or died).
The parent enforces the time limit by killing this process; here we only cap memory so that a runaway sympy
computation fails with MemoryError instead of eating the host.
"""

from __future__ import annotations

import json
import resource
import sys

MEMORY_LIMIT_BYTES = 4 << 30


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > MEMORY_LIMIT_BYTES:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, hard))
    from r1jax.rewards.math import judge

    judge("1", "1")  # imports sympy and warms the parsers before we declare ourselves ready
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            verdict = judge(request["pred"], request["gold"])
        except (MemoryError, RecursionError, ValueError, TypeError, ArithmeticError):
            verdict = (True, False)
        out.write(json.dumps(list(verdict)) + "\n")
        out.flush()


if __name__ == "__main__":
    main()

"""Peak-memory checks in a fresh process, so that the test suite's own memory does not blur them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROLOGUE = """
import json, resource, sys
sys.path.insert(0, {root!r})
def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
{setup}
before = peak_mib()
error = None
try:
{body}
except Exception as exc:
    error = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps({{"peak_delta_mib": peak_mib() - before, "error": error}}))
"""


def peak_delta(setup: str, body: str) -> dict:
    """Runs ``setup`` then ``body`` in a new Python; returns the peak RSS growth during ``body``.

    Returns:
        ``{"peak_delta_mib": float, "error": "Type: message" or None}``.
    """
    code = _PROLOGUE.format(
        root=str(ROOT),
        setup=textwrap.dedent(setup),
        body=textwrap.indent(textwrap.dedent(body), "    "),
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])

"""Peak-memory checks in a fresh process, so that the test suite's own memory does not blur them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The peak is VmHWM after ``clear_refs`` reset it to the RSS before ``body``: the process's
# lifetime peak (ru_maxrss) would hide a body that stays under the peak of importing torch.
_PROLOGUE = """
import json, sys
sys.path.insert(0, {root!r})
def status_mib(key):
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024
{setup}
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before = status_mib("VmRSS")
error = None
try:
{body}
except Exception as exc:
    error = f"{{type(exc).__name__}}: {{exc}}"
print(json.dumps({{"peak_delta_mib": status_mib("VmHWM") - before, "error": error}}))
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

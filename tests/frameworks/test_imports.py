"""With every framework installed, ``import jobtrack`` (and its public names) still imports none of them (#20)."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("torch", "lightning", "pytorch_lightning", "transformers", "keras", "accelerate")


def test_import_jobtrack_loads_no_framework() -> None:
    code = ("import sys, jobtrack, jobtrack.integrations\n"
            "for name in jobtrack.__all__:\n"
            "    getattr(jobtrack, name)\n"
            f"loaded = [m for m in {FRAMEWORKS!r} if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


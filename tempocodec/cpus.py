"""How many CPUs this process may use (its affinity where the platform has one), for thread pools and sessions."""

from __future__ import annotations

import os


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS, Windows)
        return os.cpu_count() or 1

"""``capataz serve`` under cProfile, for ``bench/fleet_simulation.py --profile``: one
profiler per thread (the event loop's, and each worker thread's that runs sync routes),
merged into ``$CAPATAZ_BENCH_PROFILE`` when the server exits. A wrapper of the bench,
not an option of capataz: the server's code is the one that ships.

    CAPATAZ_BENCH_PROFILE=/tmp/server.prof python bench/_profiled_serve.py serve --port N
"""

from __future__ import annotations

import atexit
import cProfile
import os
import pstats
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from capataz.cli import main

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _start_in_thread(_frame: FrameType, _event: str, _arg: Any) -> None:
    """Called on a new thread's first event: replaces itself with that thread's
    profiler."""
    profile = cProfile.Profile(time.thread_time)  # CPU, not waits: what the server spends
    with _lock:
        _profiles.append(profile)
    profile.enable()


def _dump() -> None:
    path = os.environ["CAPATAZ_BENCH_PROFILE"]
    with _lock:
        profiles = list(_profiles)
    for profile in profiles:
        profile.disable()
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    stats.dump_stats(path)


if __name__ == "__main__":
    sys.argv[0] = "capataz"
    threading.setprofile(_start_in_thread)
    atexit.register(_dump)
    # uvicorn re-raises the SIGTERM it caught once it has shut down; exit (and dump)
    # instead of dying of it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _start_in_thread(sys._getframe(), "call", None)
    main()

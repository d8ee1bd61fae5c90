"""One BLAS thread while a call is heard.

OpenBLAS (numpy's and scipy's) splits a matrix product over every core once it is bigger than
about 2^18 multiply-adds; the hearing's products (DTMF's Goertzel bank, the speech model's
layers) are just past that.  Split that small, the threads mostly wait on each other: on this
2-core machine the hearing of a 60 s call took 160 ms of CPU with the default pool and 93 ms
with one thread, and wall time drops too.  A probe hears one call at a time and has other work
for its other cores, so the hearing runs on one.

OpenBLAS reads its thread count from the environment once, when it loads, so the count is set
through its own ``*_set_num_threads`` for the duration and put back after.  Without an OpenBLAS
loaded (another BLAS, another platform) this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

_SET = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
        "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
        "openblas_get_num_threads64_", "openblas_get_num_threads")

Control = tuple[Callable[[], int], Callable[[int], None]]


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (Linux: /proc/self/maps)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = {line.split(maxsplit=5)[-1] for line in maps.splitlines()
             if "openblas" in line.lower() and line.count(" ") >= 5}
    return sorted(p for p in paths if p.startswith("/"))


@cache
def _controls() -> tuple[Control, ...]:
    """(get, set) of each loaded OpenBLAS, found once (reading the map costs 1.5 ms): the
    hearing's libraries are loaded first, so both numpy's and scipy's are among them."""
    import numpy  # noqa: F401
    import scipy.signal  # noqa: F401

    found: list[Control] = []
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        get = next((getattr(lib, n) for n in _GET if hasattr(lib, n)), None)
        put = next((getattr(lib, n) for n in _SET if hasattr(lib, n)), None)
        if get is None or put is None:
            continue
        get.restype, get.argtypes = ctypes.c_int, []
        put.restype, put.argtypes = None, [ctypes.c_int]
        found.append((get, put))
    return tuple(found)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with every loaded OpenBLAS on one thread; the previous counts come back."""
    saved = [(get(), put) for get, put in _controls()]
    for _, put in saved:
        put(1)
    try:
        yield
    finally:
        for count, put in saved:
            put(count)


def threads() -> list[int]:
    """Current thread count of each loaded OpenBLAS (for tests and the benchmark)."""
    return [get() for get, _ in _controls()]

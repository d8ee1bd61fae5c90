"""The hearing's one-BLAS-thread guard: OpenBLAS on one thread inside, its own count after."""

from __future__ import annotations

import numpy as np

from probe.audio import blas


def test_one_thread_inside_and_the_previous_count_after() -> None:
    before = blas.threads()
    assert before, "numpy's OpenBLAS is found in the process map"
    with blas.one_thread():
        assert blas.threads() == [1] * len(before)
        a = np.ones((300, 300), np.float32)
        assert float((a @ a)[0, 0]) == 300.0  # products still work meanwhile
    assert blas.threads() == before


def test_the_count_comes_back_when_the_body_raises() -> None:
    before = blas.threads()
    try:
        with blas.one_thread():
            raise RuntimeError("analysis failed")
    except RuntimeError:
        pass
    assert blas.threads() == before

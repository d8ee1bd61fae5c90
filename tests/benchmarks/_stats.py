"""Small helpers shared by the benchmarks: summary statistics and table printing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorStats:
    """Summary of signed errors (ms): bias and spread."""

    count: int
    mean: float
    mean_abs: float
    p95_abs: float
    max_abs: float

    @classmethod
    def of(cls, errors: Sequence[float]) -> ErrorStats | None:
        if not errors:
            return None
        absolute = sorted(abs(e) for e in errors)
        return cls(count=len(errors), mean=sum(errors) / len(errors),
                   mean_abs=sum(absolute) / len(absolute), p95_abs=percentile(absolute, 95),
                   max_abs=absolute[-1])


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (no interpolation)."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ",
          left: int = 1) -> str:
    """A plain text table: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [str(c).ljust(w) if i < left else str(c).rjust(w)
               for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return indent + "  ".join(out).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])

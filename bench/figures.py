"""One benchmark figure: a value, the baseline it is compared with, and the target ratio."""

from __future__ import annotations

import json
import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TextIO

Comparison = Literal[">=", "<="]

_COMPARE: dict[Comparison, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Figure:
    """`value / baseline` must satisfy `<comparison> <threshold>` (">=" for rates, "<=" for times)."""

    bench: str
    value: float
    unit: str
    baseline: float
    threshold: float
    comparison: Comparison = ">="

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    @property
    def ok(self) -> bool:
        return _COMPARE[self.comparison](self.ratio, self.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "value": round(self.value, 1),
            "unit": self.unit,
            "baseline": round(self.baseline, 1),
            "ratio": round(self.ratio, 3),
            "target": f"{self.comparison} {self.threshold:g}",
            "ok": self.ok,
        }

    def line(self) -> str:
        return json.dumps(self.as_dict())


def emit(figure: Figure, stream: TextIO | None = None) -> None:
    """Print the figure as one JSON line (on stdout unless told otherwise) and flush it."""
    out = stream or sys.stdout
    out.write(figure.line() + "\n")
    out.flush()

"""Order statistics of timing samples, shared by the op bench (run.py), the model bench (models.py) and the ONNX
worker process (model_worker.py, which must run with numpy alone: keep this file free of torch)."""

from __future__ import annotations

from typing import Dict, Sequence


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of xs, interpolating linearly between the two nearest ranks."""
    if not xs:
        raise ValueError("percentile of no samples")
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(samples_ms: Sequence[float]) -> Dict[str, float]:
    """The figures every bench table reports: median and the 20th/80th percentiles, in ms."""
    return dict(median_ms=percentile(samples_ms, 0.5), p20_ms=percentile(samples_ms, 0.2),
                p80_ms=percentile(samples_ms, 0.8))

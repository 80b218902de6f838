"""The speedup bar chart shared by the op-level (bench/run.py) and model-level (bench/models.py) benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional


def speedup_bars(path: Path, labels: List[str], series: Dict[str, List[float]], title: str,
                 slot_width: float, min_width: float, height: float, rotate: bool = False) -> Optional[str]:
    """Grouped bars, one group per label and one bar per series (0.0 = no bar), with the parity line at 1.
    Writes a PNG to `path`; returns an error message instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib); no plot written"
    fig, ax = plt.subplots(figsize=(max(min_width, slot_width * len(labels) * max(1, len(series))), height))
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))], vals, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    if rotate:
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    else:
        ax.set_xticklabels(labels)
    ax.set_ylabel("speedup of cnnkernels (other ms / cnnkernels ms)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None

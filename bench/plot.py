"""The scaling chart of a benchmark run: for each scaling figure (``xm list``, ``xm list -l``,
RSS, create+destroy, idle CPU) xend's values and its anchor's over the domain counts, on one
PNG of small panels (log-log where the values span decades).

matplotlib is the benchmark's only optional dependency (``pip install -e '.[bench]'``); the
daemon and the tests never import it. Without it ``chart`` says so and draws nothing.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from bench.common import Row

_COUNT = re.compile(r"(\d[\d,]*) domains?")
Series = Dict[str, List[Tuple[int, float]]]


def scaling_series(rows: Sequence[Row]) -> "OrderedDict[str, Tuple[str, Series]]":
    """figure (the count taken out) -> (unit, {"xend": [(n, v)], anchor name: [(n, v)]})."""
    out: "OrderedDict[str, Tuple[str, Series]]" = OrderedDict()
    for r in rows:
        m = _COUNT.search(r.figure)
        if m is None or r.value is None or r.bench not in ("xm list", "scale", "rss"):
            continue
        n = int(m.group(1).replace(",", ""))
        name = (r.figure[:m.start()] + r.figure[m.end():]).replace(" ,", ",").strip(" ,")
        if r.bench == "xm list" and "virsh -c test+unix" not in r.anchor:
            continue                # one anchor per panel: the daemon-held test driver
        unit, series = out.setdefault(name, (r.unit, OrderedDict()))
        series.setdefault("xend", []).append((n, r.value))
        if r.anchor and r.anchor_value is not None:
            series.setdefault(r.anchor, []).append((n, r.anchor_value))
    return out


def chart(rows: Sequence[Row], path: Path, title: str = "") -> Optional[str]:
    """Draw the chart to ``path``; the reason when it cannot (None when drawn)."""
    series = scaling_series(rows)
    if not series:
        return "no scaling figures in this run"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    cols = min(3, len(series))
    lines = -(-len(series) // cols)
    fig, axes = plt.subplots(lines, cols, figsize=(5.2 * cols, 3.8 * lines), squeeze=False)
    for ax, (name, (unit, curves)) in zip(axes.flat, series.items()):
        for label, points in curves.items():
            points.sort()
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, marker="o", linewidth=2 if label == "xend" else 1.2,
                    label="xend" if label == "xend" else label)
        ax.set_xscale("log")
        values = [v for pts in curves.values() for _, v in pts if v > 0]
        if values and max(values) / max(min(values), 1e-9) > 20:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("domains")
        ax.set_ylabel(unit)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None

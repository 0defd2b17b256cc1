"""What every plot of the report draws on: sized figures, one axes style, method colors, PNG bytes.

matplotlib is imported inside these functions, never at module level, so the CLI and the pytest
plugin (which import the report at start-up) do not load it until a report is drawn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from peftcore.report.rows import Row, method_order

_DPI = 110
BASE_COLOR = "#8c8c8c"  # the untrained base model, in every plot


def method_colors(rows: Sequence[Row]) -> dict[str, str]:
    """One color per method, in method order, the same in every plot; untrained rows are grey."""
    from matplotlib import colormaps

    names = list(dict.fromkeys(r.method for r in sorted(rows, key=method_order)))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = {name: _hex(cmap(i % cmap.N)) for i, name in enumerate(names)}
    for row in rows:
        if not row.trains:
            colors[row.method] = BASE_COLOR
    return colors


def _hex(color: Sequence[float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in color[:3])


def png_bytes(fig: Any) -> bytes:
    """The figure as a PNG on white."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def new_figure(width: float, height: float) -> Any:
    """A figure of ``width`` x ``height`` inches whose panels are laid out by matplotlib."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def style_axes(ax: Any) -> None:
    """A light grid behind the data, no top or right spine."""
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def method_bars(
    methods: Sequence[str], values: Sequence[float], colors: Mapping[str, str], **style: Any
) -> tuple[Any, Any]:
    """A figure with one horizontal bar a method, the first at the top, sized to the number of methods."""
    fig = new_figure(7.6, 0.9 + 0.34 * len(methods))
    ax = fig.add_subplot()
    style_axes(ax)
    ax.barh(range(len(methods)), values, color=[colors[m] for m in methods], height=0.66, **style)
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    return fig, ax


def label_bars(ax: Any, ends: Sequence[float], labels: Sequence[str], *, gap: float, fontsize: float) -> None:
    """Write each bar's label ``gap`` points past ``ends`` (in data units), bar by bar."""
    for i, (end, text) in enumerate(zip(ends, labels, strict=True)):
        ax.annotate(
            text, (end, i), xytext=(gap, 0), textcoords="offset points", va="center", fontsize=fontsize
        )


def panel_grid(count: int, height: float = 3.1, max_cols: int = 3) -> tuple[Any, list[Any]]:
    """``count`` panels, at most ``max_cols`` a row, on a page-wide figure."""
    cols = max(1, min(max_cols, count))
    rows = math.ceil(count / cols)
    fig = new_figure(13.0 if count > 1 else 7.6, height * rows + 0.5)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(count)]
    return fig, axes

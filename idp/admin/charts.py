"""Bar charts as inline SVG, drawn on the server: no script, readable without colour, described for screen
readers.

Each chart is ``<svg role="img">`` labelled by its ``<title>`` and ``<desc>``; every bar carries its own
``<title>`` (label and value), and the page puts the same numbers in a table next to the chart (WCAG 1.1.1).
Bars are a dark blue (#1d4f91, 8.6:1 on white, WCAG 1.4.11 asks 3:1), text is near-black. Every text is
escaped: group names come from the directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

BAR = "#1d4f91"
TEXT = "#1a1a1a"
GRID = "#767676"


@dataclass(frozen=True)
class Bar:
    label: str
    """What the bar is (an hour, a group), for its tooltip and the axis."""
    value: float
    text: str
    """The value as shown (``12``, ``75 %``)."""


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def column_chart(bars: Sequence[Bar], *, chart_id: str, title: str, desc: str, axis_labels: dict[int, str],
                 height: int = 200) -> Markup:
    """Vertical bars (e.g. sign-ins per hour); ``axis_labels`` puts a label under the bar of that index."""
    width = 720
    left, bottom, top = 40, 28, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max((bar.value for bar in bars), default=0.0) or 1.0
    step = plot_w / max(len(bars), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(chart_id)}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" '
        f'font-family="sans-serif" font-size="11">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{GRID}"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" fill="{TEXT}">{escape(_number(peak))}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" fill="{TEXT}">0</text>',
    ]
    for index, bar in enumerate(bars):
        bar_h = plot_h * bar.value / peak
        x = left + index * step
        parts.append(
            f'<rect class="bar" x="{x + step * 0.1:.2f}" y="{top + plot_h - bar_h:.2f}" width="{step * 0.8:.2f}" '
            f'height="{bar_h:.2f}" fill="{BAR}"><title>{escape(bar.label)}: {escape(bar.text)}</title></rect>')
        if index in axis_labels:
            parts.append(f'<text x="{x:.2f}" y="{height - 8}" fill="{TEXT}">{escape(axis_labels[index])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def row_chart(bars: Sequence[Bar], *, chart_id: str, title: str, desc: str, maximum: float = 100.0) -> Markup:
    """Horizontal bars with their label on the left and their value on the right (e.g. a share per group)."""
    width, label_w, value_w, row_h = 720, 220, 70, 26
    plot_w = width - label_w - value_w
    height = row_h * max(len(bars), 1) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(chart_id)}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" '
        f'font-family="sans-serif" font-size="12">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
    ]
    for index, bar in enumerate(bars):
        y = 4 + index * row_h
        bar_w = plot_w * min(max(bar.value, 0.0), maximum) / (maximum or 1.0)
        label = bar.label if len(bar.label) <= 32 else bar.label[:31] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end" fill="{TEXT}">{escape(label)}</text>')
        parts.append(
            f'<rect class="bar" x="{label_w}" y="{y + 4}" width="{bar_w:.2f}" height="{row_h - 8}" fill="{BAR}">'
            f'<title>{escape(bar.label)}: {escape(bar.text)}</title></rect>')
        parts.append(f'<text x="{label_w + plot_w + 6}" y="{y + 16}" fill="{TEXT}">{escape(bar.text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

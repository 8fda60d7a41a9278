"""Small inline SVG charts for the page: no plotting library, nothing to download, drawn in the browser."""

from __future__ import annotations

from html import escape

import numpy as np

from mbm.search import score_histogram

W, H, PAD = 480, 150, 24  # pixels: the chart, and room for the axis labels


def histogram_svg(scores: np.ndarray, threshold: float | None, shown: list[float]) -> str:
    """The scores of every gallery image for one query, the threshold as a red line, and the scores of the
    results shown as ticks: people see where the cut-off falls in the whole distribution."""
    if not len(scores):
        return "<p>No images to score yet.</p>"
    counts, edges = score_histogram(scores, include=threshold)
    lo, hi = float(edges[0]), float(edges[-1])
    x = lambda v: PAD + (v - lo) / (hi - lo) * (W - 2 * PAD)
    bar_w = (W - 2 * PAD) / len(counts)
    top = max(int(counts.max()), 1)
    bars = "".join(
        f'<rect x="{PAD + i * bar_w:.1f}" y="{H - PAD - c / top * (H - 2 * PAD):.1f}" width="{bar_w - 1:.1f}" '
        f'height="{c / top * (H - 2 * PAD):.1f}" fill="#7b8fd6"><title>{c} images scored '
        f'{edges[i]:.3f} to {edges[i + 1]:.3f}</title></rect>' for i, c in enumerate(counts) if c)
    ticks = "".join(f'<line x1="{x(s):.1f}" x2="{x(s):.1f}" y1="{H - PAD}" y2="{H - PAD + 6}" stroke="#222"/>'
                    for s in shown)
    cut = ""
    if threshold is not None and lo <= threshold <= hi:
        cut = (f'<line x1="{x(threshold):.1f}" x2="{x(threshold):.1f}" y1="{PAD / 2}" y2="{H - PAD}" stroke="#d33" '
               f'stroke-width="2"/><text x="{x(threshold) + 4:.1f}" y="{PAD}" fill="#d33" font-size="11">'
               f'threshold {threshold:.2f}</text>')
    axis = (f'<text x="{PAD}" y="{H - 4}" font-size="11">{lo:.2f}</text>'
            f'<text x="{W - PAD}" y="{H - 4}" font-size="11" text-anchor="end">{hi:.2f}</text>'
            f'<text x="{W / 2}" y="{H - 4}" font-size="11" text-anchor="middle">cosine score '
            f'({len(scores)} images; ticks: results shown)</text>')
    return (f'<svg class="mbm-hist" viewBox="0 0 {W} {H}" width="{W}" height="{H}" style="max-width:100%" role="img" '
            f'aria-label="{escape("histogram of gallery scores")}">{bars}{ticks}{cut}{axis}</svg>')

"""Small inline SVG charts for the page: no plotting library, nothing to download, drawn in the browser."""

from __future__ import annotations

import base64
import functools
import io
from html import escape

import numpy as np
from PIL import Image

from mbm.search import score_histogram

W, H, PAD = 960, 170, 24  # the histogram's drawing units (it is drawn as wide as its column), and axis room
CHAR_W = 6.2  # the width of one character of an 11-px label, in drawing units: room for labels is made from it


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
    return (f'<svg class="mbm-hist" viewBox="0 0 {W} {H}" width="100%" style="max-width:{W * 1.5:.0f}px" role="img" '
            f'aria-label="{escape("histogram of gallery scores")}">{bars}{ticks}{cut}{axis}</svg>')


# ---------------------------------------------------------------- colours and thumbnails
_VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
IMAGE_COLOUR, TEXT_COLOUR, HIT_COLOUR = "#3b6fd6", "#e07b24", "#d62f2f"


def ramp(t: float) -> str:
    """A viridis-like colour for `t` in [0, 1]: dark purple (low) to yellow (high), readable in greyscale."""
    t = min(max(float(t), 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    a, b, f = _VIRIDIS[i], _VIRIDIS[i + 1], t - i
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b))


def image_uri(image: Image.Image, fmt: str = "JPEG") -> str:
    """An image as a data URI, so an SVG can show it without opening a file route."""
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 75} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


@functools.lru_cache(maxsize=4096)
def thumb_uri(path: str, size: int = 64) -> str:
    """A small JPEG of an image file as a data URI (see `image_uri`)."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
        im.thumbnail((size, size))
        return image_uri(im)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ---------------------------------------------------------------- heatmap
def heatmap_svg(values: np.ndarray, rows: list[str], cols: list[str], *, row_images: list[str] | None = None,
                lo: float | None = None, hi: float | None = None, diagonal: bool = False, fmt: str = "{:.2f}",
                css_class: str = "mbm-heat", what: str = "cosine") -> str:
    """An `(R, C)` matrix as coloured cells with the value written in each (when they fit), the row labels (or
    thumbnails) on the left and the column labels slanted on top; `diagonal` outlines the matching pairs."""
    values = np.asarray(values, float)
    n_rows, n_cols = values.shape
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    cell = max(22, min(56, 560 // max(n_cols, 1)))
    shown_cols = [_short(c, 22) for c in cols]
    left = 56 if row_images else int(12 + CHAR_W * max(len(_short(r, 34)) for r in rows))
    top, right = _slanted_room(shown_cols, cell)
    width, height = left + n_cols * cell + right, top + n_rows * cell + 8
    scale = (hi - lo) or 1.0
    out = []
    for r in range(n_rows):
        y = top + r * cell
        if row_images:
            out.append(f'<image href="{row_images[r]}" x="4" y="{y + 1}" width="{cell - 2}" height="{cell - 2}">'
                       f'<title>{escape(rows[r])}</title></image>')
        else:
            out.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" font-size="11" text-anchor="end">'
                       f'{escape(_short(rows[r], 34))}<title>{escape(rows[r])}</title></text>')
        for c in range(n_cols):
            v = values[r, c]
            t = (v - lo) / scale
            label = fmt.format(v) if cell >= 34 else ""
            out.append(f'<rect class="cell" x="{left + c * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                       f'fill="{ramp(t)}"><title>{escape(rows[r])} × {escape(cols[c])}: {what} {v:.4f}</title></rect>')
            if label:
                colour = "#111" if t > 0.6 else "#fff"
                out.append(f'<text x="{left + c * cell + cell / 2}" y="{y + cell / 2 + 4}" font-size="10" '
                           f'fill="{colour}" text-anchor="middle" pointer-events="none">{label}</text>')
        if diagonal and r < n_cols:
            out.append(f'<rect x="{left + r * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="none" '
                       f'stroke="#fff" stroke-width="2" pointer-events="none"/>')
    for c in range(n_cols):
        x = left + c * cell + cell / 2
        out.append(f'<text transform="translate({x + 3},{top - 6}) rotate(-40)" font-size="11">'
                   f'{escape(shown_cols[c])}<title>{escape(cols[c])}</title></text>')
    return (f'<svg class="{css_class}" viewBox="0 0 {width:.0f} {height}" width="{width:.0f}" height="{height}" '
            f'style="max-width:100%" role="img" aria-label="{escape(what)} matrix">{"".join(out)}</svg>')


def _slanted_room(labels: list[str], cell: int) -> tuple[int, int]:
    """`(top, right)` margins that hold column labels slanted at 40 degrees: as tall as the longest label rises and,
    past the last column, as wide as it runs on (a fixed margin cut long labels and left short ones a blank band)."""
    longest = CHAR_W * max((len(t) for t in labels), default=0)
    rise, run = longest * np.sin(np.radians(40)), longest * np.cos(np.radians(40))
    return int(rise + 18), int(max(8, run - cell / 2 + 8))


# ---------------------------------------------------------------- line chart
def curve_svg(xs: list[float], ys: list[float], *, marks: list[tuple[float, float]] = (), x_label: str = "seconds",
              y_label: str = "loss", mark_label: str = "R@5", width: int = 520, height: int = 220) -> str:
    """A line of `ys` over `xs` (the training loss), and optional `marks` `(x, value in [0, 1])` drawn as dots on a
    0-100% scale at the right (held-out recall), so both can be watched on one chart as they stream in."""
    if not xs:
        return f'<svg class="mbm-curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}"></svg>'
    pad_l, pad_r, pad_y = 44, 44, 22
    x_hi = max(max(xs), 1e-9)
    y_lo, y_hi = min(0.0, min(ys)), max(ys) or 1.0
    px = lambda x: pad_l + x / x_hi * (width - pad_l - pad_r)
    py = lambda y: height - pad_y - (y - y_lo) / ((y_hi - y_lo) or 1.0) * (height - 2 * pad_y)
    pm = lambda v: height - pad_y - v * (height - 2 * pad_y)
    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    dots = "".join(f'<circle cx="{px(x):.1f}" cy="{pm(v):.1f}" r="3.5" fill="{HIT_COLOUR}"><title>{mark_label} '
                   f'{v:.0%} at {x:.0f} s</title></circle>' for x, v in marks)
    axis = (f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{height - pad_y}" y2="{height - pad_y}" stroke="#888"/>'
            f'<text x="{pad_l}" y="{height - 4}" font-size="11">0</text>'
            f'<text x="{width - pad_r}" y="{height - 4}" font-size="11" text-anchor="end">{x_hi:.0f} {x_label}</text>'
            f'<text x="4" y="{pad_y - 6}" font-size="11" fill="{IMAGE_COLOUR}">{y_label} {y_hi:.2f}</text>'
            f'<text x="4" y="{height - pad_y}" font-size="11" fill="{IMAGE_COLOUR}">{y_lo:.2f}</text>')
    if marks:
        axis += (f'<text x="{width - 4}" y="{pad_y - 6}" font-size="11" fill="{HIT_COLOUR}" text-anchor="end">'
                 f'{mark_label} 100%</text><text x="{width - 4}" y="{height - pad_y}" font-size="11" '
                 f'fill="{HIT_COLOUR}" text-anchor="end">0%</text>')
    return (f'<svg class="mbm-curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'style="max-width:100%" role="img" aria-label="{escape(y_label)} curve">'
            f'<polyline points="{line}" fill="none" stroke="{IMAGE_COLOUR}" stroke-width="2"/>{dots}{axis}</svg>')


# ---------------------------------------------------------------- embedding map
MAP_CSS = (".mbm-map .pv{display:none}.mbm-map .pt:hover .pv{display:inline}"
           ".mbm-map .pt:hover circle{stroke:#000;stroke-width:2}")


def map_svg(xy: np.ndarray, kinds: list[str], ids: list[int], captions: list[str], thumbs: dict[int, str],
            hits: set[int] = frozenset(), query: tuple[float, float] | None = None, query_label: str = "",
            width: int = 720, height: int = 440) -> str:
    """Points of a 2-D projection: images blue, captions orange, the query a black star and its hits ringed red.

    Hovering a point shows its thumbnail and caption in the panel at the right and draws the line to its partner
    (an image's own caption, a caption's image): the length of those lines is the modality gap. Thumbnails are
    stored once in `<defs>` and referenced, so each image travels once however many points show it.
    """
    panel = 200
    plot_w = width - panel
    pad = 18
    pts = np.asarray(xy, float)
    every = pts if query is None else np.vstack([pts, np.asarray(query, float)[None]])
    lo, hi = every.min(axis=0), every.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    sx = lambda v: pad + (v - lo[0]) / span[0] * (plot_w - 2 * pad)
    sy = lambda v: height - pad - (v - lo[1]) / span[1] * (height - 2 * pad)
    where = {(k, i): (sx(p[0]), sy(p[1])) for k, i, p in zip(kinds, ids, pts)}
    defs = "".join(f'<image id="mbm-t{i}" href="{uri}" width="{panel - 24}" height="{panel - 24}" '
                   f'preserveAspectRatio="xMidYMid meet"/>' for i, uri in thumbs.items())
    order = sorted(range(len(pts)), key=lambda j: (kinds[j] == "image", ids[j] in hits))  # hits drawn last
    out = []
    for j in order:
        kind, i = kinds[j], ids[j]
        x, y = where[(kind, i)]
        partner = where.get(("caption" if kind == "image" else "image", i))
        colour = IMAGE_COLOUR if kind == "image" else TEXT_COLOUR
        ring = f' class="hit" stroke="{HIT_COLOUR}" stroke-width="2.5"' if kind == "image" and i in hits else ""
        radius = 5 if kind == "image" and i in hits else 3.2
        line = (f'<line class="pv" x1="{x:.1f}" y1="{y:.1f}" x2="{partner[0]:.1f}" y2="{partner[1]:.1f}" '
                f'stroke="#333" stroke-dasharray="3 2"/>' if partner else "")
        preview = f'<use class="pv" href="#mbm-t{i}" x="{plot_w + 12}" y="12"/>' if i in thumbs else ""
        text = (f'<text class="pv" x="{plot_w + 12}" y="{panel + 4}" font-size="11">'
                f'{escape(kind)} #{i}</text><text class="pv" x="{plot_w + 12}" y="{panel + 20}" font-size="11">'
                f'{escape(_short(captions[j], 34))}</text>')
        out.append(f'<g class="pt" data-kind="{kind}" data-id="{i}">{line}<circle cx="{x:.1f}" cy="{y:.1f}" '
                   f'r="{radius}" fill="{colour}" fill-opacity="0.75"{ring}><title>{escape(kind)}: '
                   f'{escape(captions[j])}</title></circle>{preview}{text}</g>')
    if query is not None:
        qx, qy = sx(query[0]), sy(query[1])
        out.append(f'<g class="query"><path d="{_star(qx, qy, 9)}" fill="#111" stroke="#fff"/>'
                   f'<text x="{qx + 11:.1f}" y="{qy - 8:.1f}" font-size="12" font-weight="bold">'
                   f'{escape(_short(query_label, 30))}</text><title>the query: {escape(query_label)}</title></g>')
    legend = (f'<circle cx="{plot_w + 16}" cy="{height - 58}" r="4" fill="{IMAGE_COLOUR}"/>'
              f'<text x="{plot_w + 26}" y="{height - 54}" font-size="11">image</text>'
              f'<circle cx="{plot_w + 16}" cy="{height - 40}" r="4" fill="{TEXT_COLOUR}"/>'
              f'<text x="{plot_w + 26}" y="{height - 36}" font-size="11">caption</text>'
              f'<circle cx="{plot_w + 16}" cy="{height - 22}" r="5" fill="{IMAGE_COLOUR}" stroke="{HIT_COLOUR}" '
              f'stroke-width="2.5"/><text x="{plot_w + 26}" y="{height - 18}" font-size="11">hit of the query '
              f'(★)</text><text x="{plot_w + 12}" y="{panel + 40}" font-size="10" fill="#666">hover a point</text>')
    frame = f'<rect x="0.5" y="0.5" width="{plot_w - 1}" height="{height - 1}" fill="#fafafa" stroke="#ddd"/>'
    return (f'<svg class="mbm-map" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'style="max-width:100%" role="img" aria-label="embedding map"><style>{MAP_CSS}</style>'
            f'<defs>{defs}</defs>{frame}{"".join(out)}{legend}</svg>')


def _star(x: float, y: float, r: float) -> str:
    pts = []
    for k in range(10):
        a = np.pi / 2 + k * np.pi / 5
        rr = r if k % 2 == 0 else r * 0.45
        pts.append(f"{x + rr * np.cos(a):.1f},{y - rr * np.sin(a):.1f}")
    return "M" + " L".join(pts) + " Z"


# ---------------------------------------------------------------- vectors and colour cells
def vector_svg(values: np.ndarray, label: str, width: int = 640, height: int = 34) -> str:
    """A `(D,)` vector as a strip of D cells, negative purple to positive yellow: an embedding is just numbers."""
    values = np.asarray(values, float).reshape(-1)
    top = float(np.abs(values).max()) or 1.0
    w = width / len(values)
    cells = "".join(f'<rect x="{i * w:.2f}" y="0" width="{w + 0.3:.2f}" height="{height}" '
                    f'fill="{ramp(0.5 + v / top / 2)}"><title>dimension {i}: {v:+.4f}</title></rect>'
                    for i, v in enumerate(values))
    return (f'<svg class="mbm-vector" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'style="max-width:100%" role="img" aria-label="{escape(label)}">{cells}</svg>')


def cells_svg(colours: np.ndarray, size: int = 120) -> str:
    """An `(h, w, 3)` grid of colours in [0, 1] (the fused heads' colour branch input) as squares."""
    h, w, _ = colours.shape
    c = size / max(h, w)
    rects = "".join(f'<rect x="{x * c:.1f}" y="{y * c:.1f}" width="{c:.1f}" height="{c:.1f}" '
                    f'fill="#{"".join(f"{round(float(v) * 255):02x}" for v in colours[y, x])}"/>'
                    for y in range(h) for x in range(w))
    return (f'<svg class="mbm-cells" viewBox="0 0 {w * c:.0f} {h * c:.0f}" width="{w * c:.0f}" height="{h * c:.0f}" '
            f'role="img" aria-label="colour cells">{rects}</svg>')


# ---------------------------------------------------------------- zero-shot over time
PALETTE = ("#3b6fd6", "#e07b24", "#2e9e4f", "#d62f2f", "#8c3cc8", "#8b5a2b", "#e377c2", "#555555", "#bcbd22",
           "#17becf")  # one colour per label, distinct in hue and in lightness


def timeline_svg(times: np.ndarray, labels: list[str], probs: np.ndarray, width: int = 720,
                 height: int = 240) -> str:
    """Each label's probability over a video's sampled frames, `probs (F, L)` at `times (F,)` seconds: one line and
    dot per label (hover a dot for the frame's time and probability), a 0-100% scale, the labels as a legend."""
    times, probs = np.asarray(times, float), np.asarray(probs, float)
    legend_w = int(24 + CHAR_W * max(len(_short(label, 24)) for label in labels))
    pad_l, pad_r, pad_y = 40, legend_w, 22
    t_hi = max(float(times.max()) if len(times) else 0.0, 1e-9)
    px = lambda t: pad_l + t / t_hi * (width - pad_l - pad_r)
    py = lambda p: height - pad_y - p * (height - 2 * pad_y)
    out = []
    for j, label in enumerate(labels):
        colour = PALETTE[j % len(PALETTE)]
        points = " ".join(f"{px(t):.1f},{py(p):.1f}" for t, p in zip(times, probs[:, j]))
        out.append(f'<g class="label" data-label="{escape(label)}"><polyline points="{points}" fill="none" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{px(t):.1f}" cy="{py(p):.1f}" r="3" fill="{colour}"><title>{escape(label)}: {p:.0%} '
                f'at {int(t) // 60:02d}:{t % 60:04.1f}</title></circle>' for t, p in zip(times, probs[:, j])]
        y = pad_y + 16 * j
        out.append(f'<rect x="{width - legend_w + 10}" y="{y - 8}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{width - legend_w + 24}" y="{y + 1}" font-size="11">{escape(_short(label, 24))}'
                   f'</text></g>')
    axis = (f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{py(0)}" y2="{py(0)}" stroke="#888"/>'
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{py(1)}" y2="{py(1)}" stroke="#ddd"/>'
            f'<text x="{pad_l - 4}" y="{py(1) + 4}" font-size="11" text-anchor="end">100%</text>'
            f'<text x="{pad_l - 4}" y="{py(0) + 4}" font-size="11" text-anchor="end">0%</text>'
            f'<text x="{pad_l}" y="{height - 4}" font-size="11">0 s</text>'
            f'<text x="{width - pad_r}" y="{height - 4}" font-size="11" text-anchor="end">{t_hi:.0f} s</text>')
    return (f'<svg class="mbm-timeline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'style="max-width:100%" role="img" aria-label="probability of each label over time">{axis}'
            f'{"".join(out)}</svg>')

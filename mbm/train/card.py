"""The model card written beside trained weights: data, architecture, size, time and metrics."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from mbm.data.shapes import COLOURS, HELD_OUT, SHAPES
from mbm.train.clip import aux_weight_at

BAR = {"t2i_r1": 0.70, "t2i_r5": 0.95, "zs_colour": 0.95, "zs_shape": 0.90}  # the quality bar of issue 2


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per split, one column per metric."""
    cols = ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "zs_colour", "zs_shape")
    head = "| split | " + " | ".join(cols) + " |\n" + "|---" * (len(cols) + 1) + "|\n"
    rows = "".join(f"| {split} | " + " | ".join(_pct(m[c]) for c in cols) + " |\n" for split, m in metrics.items())
    return head + rows


def write_card(out: Path, model: torch.nn.Module, cfg, history: list, metrics: dict, eval_seconds: float) -> Path:
    """Write `MODEL_CARD.md` and `metrics.json` into `out`."""
    params = sum(p.numel() for p in model.parameters())
    visual = sum(p.numel() for p in model.visual.parameters())
    steps, seconds, last_loss = history[-1] if history else (0, 0.0, float("nan"))
    samples = steps * cfg.batch_size
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU threads, "
               f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    record = {"metrics": metrics, "steps": steps, "train_seconds": seconds, "samples": samples, "params": params}
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    embed_dim = cfg.model_cfg["embed_dim"]
    budget = f"--steps {cfg.steps}" if cfg.steps > 0 else f"--minutes {cfg.minutes:g}"
    budget += f" --aux-weight {cfg.aux_weight:g} --aux-until {cfg.aux_until:g}"
    aux_end = aux_weight_at(1.0, cfg)
    held_out = ", ".join(f"{c} {s}" for c, s in sorted(HELD_OUT))
    vc, tc = cfg.model_cfg["vision_cfg"], cfg.model_cfg["text_cfg"]
    text = f"""# mbm-shapes: a small CLIP trained on a synthetic shapes world

Trained by `python -m mbm train-clip {budget} --out {out.name}` (see `mbm/train/clip.py`).

## Data
Scenes from `mbm.data.shapes`: 1-4 objects ({len(SHAPES)} shapes: {", ".join(SHAPES)}; {len(COLOURS)} colours:
{", ".join(COLOURS)}; 3 sizes; 9 grid places) on flat, gradient or noisy mid-tone backgrounds, rendered at
{vc["image_size"]} px. Captions mix full descriptions, short phrases, prompt-like phrases, relations and counts.
{int(cfg.group_fraction * 100)}% of every batch come in groups of {cfg.group_size} minimal variants
(one mentioned object's shape or colour changed, same phrasing).
{len(HELD_OUT)} colour-shape combinations never appear in training: {held_out}.

## Architecture
open_clip `CLIP`: ModifiedResNet image tower (layers {vc["layers"]}, width {vc["width"]}, {vc["image_size"]} px),
text transformer ({tc["layers"]} layers, width {tc["width"]}, {tc["heads"]} heads,
context {tc["context_length"]} tokens, open_clip's BPE tokenizer), shared embedding of {embed_dim} dimensions.
Parameters: {params:,} ({visual:,} in the image tower; most of the rest is the 49,408-token embedding).
Weights: fp16 safetensors.

## Training
{steps:,} steps of {cfg.batch_size} ({samples:,} image-caption pairs) in {seconds / 60:.1f} minutes;
open_clip `ClipLoss`, AdamW (lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}), warm-up then cosine decay,
temperature clamped at 100. An auxiliary grid probe (shape and colour of each of the 9 cells, read off the
image embedding; its weight falls linearly from {cfg.aux_weight:g} to {aux_end:g} by the end of training) gives the
image tower a direct, factorised signal for shape and colour; it is discarded, and the saved model is a plain
open_clip `CLIP`.
Final training loss {last_loss:.3f}. Machine: {machine}.

## Metrics
`python -m mbm eval --model mbm-shapes` ({eval_seconds:.0f} s here). Retrieval: 1,000 scenes per split ranked by
their full caption; zero-shot: 500 single-object scenes per split, prompt ensembles from `mbm.data.language`.
`test` is i.i.d. with training; `heldout` scenes each contain a combination never seen in training.

{metrics_table(metrics)}
Bar (issue 2): t->i R@1 >= {_pct(BAR["t2i_r1"])}, R@5 >= {_pct(BAR["t2i_r5"])}, held-out within 10 points;
zero-shot colour >= {_pct(BAR["zs_colour"])}, shape >= {_pct(BAR["zs_shape"])}.

## Limits
It knows only this world: flat shapes, ten colour words, nine places. Photos are out of distribution;
use an open_clip model (`ViT-B-32:laion2b_s34b_b79k`) for real images.
"""
    path = out / "MODEL_CARD.md"
    path.write_text(text)
    return path

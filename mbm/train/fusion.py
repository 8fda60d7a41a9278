"""Training and evaluating the fusion heads on Shapes-VQA over a frozen backbone, and their table.

`train_fusion` featurizes `train` scenes once with the frozen encoder, fits one head per strategy (`train_head`), and
`evaluate_fusion` measures accuracy per strategy x question type on the i.i.d. `test` split and the
`heldout` split (colour-shape combinations never seen in training), with parameters and latency.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mbm.data.shapes import make_scene, render
from mbm.data.vqa import QUESTION_TYPES, Example, examples
from mbm.fusion import STRATEGIES, Features, FusionClassifier, HeadConfig, featurize, featurize_examples, ordered
from mbm.models import Encoder

SPLITS = {"test": "i.i.d. test", "heldout": "held-out combinations"}


def train_head(cfg: HeadConfig, feats: Features, labels: torch.Tensor, epochs: int = 12, batch_size: int = 256,
               lr: float = 2e-3, seed: int = 0, on_epoch: Callable[[int, float], None] | None = None
               ) -> FusionClassifier:
    """Fit one head on precomputed features with AdamW and a cosine schedule."""
    torch.manual_seed(seed)
    model = FusionClassifier(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((len(labels) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    for epoch in range(epochs):
        model.train()
        perm, total = torch.randperm(len(labels)), 0.0
        for start in range(0, len(labels), batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(model(feats[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if on_epoch:
            on_epoch(epoch, total / len(labels))
    return model.eval()


@torch.inference_mode()
def accuracy(model: FusionClassifier, feats: Features, examples: list[Example]) -> dict[str, float]:
    """Accuracy overall and per question type; `examples` in the order of `feats`."""
    pred = torch.cat([model(feats[i:i + 1024]).argmax(-1) for i in range(0, len(feats), 1024)])
    right = (pred == torch.tensor([ex.label for ex in examples])).numpy()
    types = np.array([ex.qtype for ex in examples])
    return {"all": float(right.mean()), **{t: float(right[types == t].mean()) for t in QUESTION_TYPES}}


def train_fusion(encoder: Encoder, strategies: tuple[str, ...] = STRATEGIES, n_scenes: int = 6000,
                 epochs: int = 15, seed: int = 0, log: Callable[[str], None] = print) -> dict[str, FusionClassifier]:
    """One trained head per strategy, on every question of `n_scenes` train scenes."""
    start = time.perf_counter()
    train = ordered(examples("train", n_scenes))
    feats = featurize_examples(encoder, train)
    labels = torch.tensor([ex.label for ex in train])
    log(f"featurized {len(train)} questions of {n_scenes} scenes in {time.perf_counter() - start:.0f} s")
    heads = {}
    for name in strategies:
        t0 = time.perf_counter()
        cfg = HeadConfig(strategy=name, embed_dim=feats.image.shape[1], token_dim=feats.tokens.shape[2])
        report = lambda e, loss, name=name: log(f"  {name}: epoch {e + 1}/{epochs}, loss {loss:.3f}")
        heads[name] = train_head(cfg, feats, labels, epochs=epochs, seed=seed, on_epoch=report)
        log(f"trained {name} in {time.perf_counter() - t0:.0f} s")
    return heads


def evaluate_fusion(encoder: Encoder, heads: dict[str, FusionClassifier], n_scenes: int = 1000) -> dict:
    """`{split: {strategy: {type: accuracy}}}`, plus `"params"` and `"latency_ms"` per strategy."""
    out: dict = {}
    for split in SPLITS:
        data = ordered(examples(split, n_scenes))
        feats = featurize_examples(encoder, data)
        out[split] = {name: accuracy(head, feats, data) for name, head in heads.items()}
    out["params"] = {name: sum(p.numel() for p in head.parameters()) for name, head in heads.items()}
    out["latency_ms"] = latency(encoder, heads)
    return out


def latency(encoder: Encoder, heads: dict[str, FusionClassifier], repeats: int = 20) -> dict[str, float]:
    """Median ms for one (image, question) end to end: encode both, then the head."""
    image = render(make_scene("test", 0), size=64)
    out = {}
    for name, head in heads.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.inference_mode():
                head(featurize(encoder, [image], ["what shape is at the top left?"]))
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = statistics.median(times)
    return out


def fusion_table(metrics: dict) -> str:
    """Markdown: accuracy per strategy x question type x split, then parameters and latency."""
    lines = ["| strategy | split | all | " + " | ".join(QUESTION_TYPES) + " | params | latency |",
             "|---|---|---:|" + "---:|" * len(QUESTION_TYPES) + "---:|---:|"]
    for name in metrics["params"]:
        for split, label in SPLITS.items():
            acc = metrics[split][name]
            cells = " | ".join(f"{100 * acc[t]:.1f}%" for t in ("all", *QUESTION_TYPES))
            lines.append(f"| {name} | {label} | {cells} | {metrics['params'][name]:,} | "
                         f"{metrics['latency_ms'][name]:.1f} ms |")
    return "\n".join(lines)


def write_fusion_card(folder: Path, meta: dict) -> Path:
    """`folder/MODEL_CARD.md`: what the heads are, how they were trained, and their measured table."""
    text = f"""# Fused image+text heads over `{meta['backbone']}` (Shapes-VQA)

Heads that answer questions about an image (`mbm.fusion.FusionClassifier`, one per strategy) over the frozen
`{meta['backbone']}` encoders (`{meta.get('backbone_key', '')}`), trained by
`python -m mbm train-fusion --backbone {meta['backbone']}` on every question of {meta.get('train_scenes')} `train`
scenes for {meta.get('epochs')} epochs (seed {meta.get('seed')}). Answers: {len(meta['answers'])} words.
Weights: one safetensors file per strategy; configs and metrics in `heads.json`.

Measured by `python -m mbm eval-fusion --heads {folder.as_posix()} --record`: every question of
{meta.get('eval_scenes')} scenes per split; `held-out combinations` scenes each hold a colour-shape pair never
seen in training. Latency is one image and question end to end (both encoders, then the head) on the CPU.

{fusion_table(meta['metrics'])}

`absent` asks the colour of a shape the scene lacks ("what colour is the star?"), `empty` the shape at a place
where nothing is ("what shape is at the bottom left?"): the right answer to both is "none" (each is a tenth of the
training questions). Read them beside `colour` and `shape_at`, which ask the same words about what is there: a head
that always said "none" would score 100% on them and 0% on those. `image-only` and `text-only` are the baselines:
each sees one modality, so neither can answer. A question outside these forms or words is flagged as such by
`mbm.fusion.FusedHeads.answers`, not answered with confidence.
"""
    path = folder / "MODEL_CARD.md"
    path.write_text(text)
    return path

"""Training `mbm-world`: batches of the mixed world, the model's shape, and the learning curve.

`mbm.train.clip.train` runs the loop; with `TrainConfig.world` set it takes its batches from `world_batches`:
widened shapes scenes (with their grid labels for the auxiliary probe) and distinct emoji concepts in the
training art styles (grid labels -100: ignored), tokenized by open_clip's byte-level BPE tokenizer (every
script gets tokens) and trimmed to the batch's longest caption (the causal text tower ignores what follows
the end token, so trimming changes nothing but the time). `CurveProbe` measures text->image R@10 on a fixed
sample of concepts in a training style and in the held-out one, and shapes zero-shot, every few steps.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import numpy as np
import torch

from mbm.data import world
from mbm.train._loop import background_batches


def world_model_cfg(image_size: int = 64, width: int = 32, embed_dim: int = 256, text_width: int = 256,
                    text_layers: int = 4, context_length: int = 48) -> dict:
    """open_clip config of `mbm-world`: a ModifiedResNet image tower and a small text transformer."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": [1, 1, 1, 1], "width": width, "head_width": 64},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": text_width,
                     "heads": max(1, text_width // 64), "layers": text_layers},
    }


def trim(tokens: torch.Tensor) -> torch.Tensor:
    """`(B, T)` -> `(B, T')`: the columns up to the batch's longest caption (padding is 0)."""
    longest = int((tokens != 0).sum(dim=1).max())
    return tokens[:, :max(2, longest)].contiguous()


def world_batches(cfg, tokenizer, mean: torch.Tensor, std: torch.Tensor, stop: threading.Event):
    """A queue of `(pixels (B, 3, H, W), tokens (B, T'), grid labels (B, 2, 9))` from the mixed world."""
    from mbm.train.clip import grid_labels
    data = world.EmojiSet.load(Path(cfg.world), cfg.model_cfg["vision_cfg"]["image_size"])
    styles = data.styles(cfg.holdout_style)
    size = cfg.model_cfg["vision_cfg"]["image_size"]
    rng = random.Random(f"world-batches/{cfg.seed}")
    n_emoji = round(cfg.batch_size * cfg.emoji_fraction)
    if cfg.clutter_share > 0:
        from mbm.data import backgrounds
        backgrounds.use_clutter(world.clutter_pictures(data, styles))

    def make():
        images, texts, scenes = world.shapes_items(cfg.batch_size - n_emoji, size, rng, cfg.group_fraction,
                                                   cfg.group_size, cfg.background_weights, cfg.vary_share,
                                                   cfg.clutter_share, cfg.hard_share)
        e_images, e_texts = world.emoji_items(data, n_emoji, size, rng, styles, cfg.phrase_share, cfg.locale_weights)
        labels = torch.cat([grid_labels(scenes), torch.full((len(e_images), 2, 9), -100, dtype=torch.long)])
        x = torch.from_numpy(world.to_array(images + e_images)).permute(0, 3, 1, 2).float().div_(255)
        return (x - mean) / std, trim(tokenizer(texts + e_texts)), labels
    return background_batches(make, stop, "mbm-world-batches")


class CurveProbe:
    """Every `every` steps: text->image R@10 (English labels) over `n` fixed concepts, in a training style and
    in the held-out one, and 8-way shapes zero-shot on widened single shapes; kept in `rows`."""

    def __init__(self, cfg, tokenizer, mean, std, every: int = 250, n: int = 400):
        self.every, self.rows, self.tokenizer = every, [], tokenizer
        data = world.EmojiSet.load(Path(cfg.world), cfg.model_cfg["vision_cfg"]["image_size"])
        size = cfg.model_cfg["vision_cfg"]["image_size"]
        rng = random.Random("curve")
        self.picks = rng.sample(range(len(data.concepts)), min(n, len(data.concepts)))
        self.texts = [data.concepts[i]["names"]["en"][0] for i in self.picks]
        train_style = data.styles(cfg.holdout_style)[0]
        self.styles = {"train": train_style, "holdout": cfg.holdout_style}
        self.pixels = {}
        for key, style in self.styles.items():
            imgs = [world.paste(data.images[style][i], size, rng, kind="white", scale=(0.9, 0.9), degrade=False)
                    for i in self.picks]
            self.pixels[key] = self._norm(imgs, mean, std)
        self.shape_pixels, self.shape_truth = self._shapes(size, mean, std)
        self.start = time.perf_counter()

    @staticmethod
    def _norm(imgs, mean, std) -> torch.Tensor:
        x = torch.from_numpy(world.to_array(imgs)).permute(0, 3, 1, 2).float().div_(255)
        return (x - mean) / std

    def _shapes(self, size, mean, std):
        from mbm.data import backgrounds
        from mbm.data.shapes import SHAPES, make_scene
        rng = random.Random("curve-shapes")
        scenes = [backgrounds.widen(make_scene("test", 30_000 + i, n_objects=1), rng) for i in range(200)]
        truth = torch.tensor([SHAPES.index(s.objects[0].shape) for s in scenes])
        return self._norm([backgrounds.render(s, size) for s in scenes], mean, std), truth

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module, step: int, loss: float) -> dict | None:
        if step % self.every:
            return None
        from mbm.data.shapes import SHAPES
        was_training, device = model.training, model.logit_scale.device
        model.eval()
        from mbm.train.clip import encode_text
        txt = encode_text(model, trim(self.tokenizer(self.texts)).to(device))  # (N, D)
        row = {"step": step, "seconds": round(time.perf_counter() - self.start), "loss": round(loss, 4)}
        for key, px in self.pixels.items():
            img = model.encode_image(px.to(device), normalize=True)  # (N, D)
            ranks = (txt @ img.T).argsort(dim=1, descending=True)[:, :10].cpu()
            row[f"r10_{key}"] = round(float((ranks == torch.arange(len(px))[:, None]).any(1).float().mean()), 4)
        protos = encode_text(model, trim(self.tokenizer([f"a {s}." for s in SHAPES])).to(device))
        pred = (model.encode_image(self.shape_pixels.to(device), normalize=True) @ protos.T).argmax(1).cpu()
        row["zs_shape"] = round(float((pred == self.shape_truth).float().mean()), 4)
        model.train(was_training)
        self.rows.append(row)
        return row


def chance_r10(n: int) -> float:
    return float(np.clip(10 / max(1, n), 0, 1))


def train_world(cfg, every: int = 250, on_row=None, on_step=None):
    """`mbm.train.clip.train` on the mixed world with a `CurveProbe` every `every` steps (and at the end).

    Returns:
        (model, history, curve rows); `on_row(row)` sees each curve row as it is measured.
    """
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from mbm.train.clip import train
    assert cfg.world, "train_world needs TrainConfig.world: the cache that prepare-data filled"
    tokenizer = open_clip.SimpleTokenizer(context_length=cfg.model_cfg["text_cfg"]["context_length"])
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    probe = CurveProbe(cfg, tokenizer, mean, std, every=every)
    held = {}

    def step_hook(step: int, progress: float, loss: float) -> None:
        held["loss"] = loss
        if on_step:
            on_step(step, progress, loss)
        row = probe(held["model"], step, loss)
        if row and on_row:
            on_row(row)
    model, history = train(cfg, on_step=step_hook, on_start=lambda m: held.update(model=m))
    if history and history[-1][0] % every:
        probe.every = 1
        row = probe(model, history[-1][0], history[-1][2])
        if on_row:
            on_row(row)
    return model, history, probe.rows

"""Contrastive training of the embedded CLIP-style model on the synthetic shapes world.

Batches are drawn fresh from the `train` split (data is unlimited, so there are no epochs).
Most of every batch comes in groups of minimal variants: a scene and copies of it with one
mentioned object's shape (or colour) changed, captioned with the same phrasing. In-batch negatives
then differ in one word and one shape, which is what forces both towers to see shape: without
them, retrieval is won on colour and place alone and shape words stay nearly synonyms. An
auxiliary probe (`GridProbe`) gets the image tower started on shape; it is not saved.
The result is saved in open_clip's own folder layout (`open_clip_config.json` +
`open_clip_model.safetensors`, fp16), which `mbm.create_model(path)` loads.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mbm.data.backgrounds import nearest_shape
from mbm.data.language import captions
from mbm.data.shapes import COLOURS, HELD_OUT, SHAPES, Scene, make_scene, render
from mbm.train._loop import background_batches, cosine_lr, run_steps

log = logging.getLogger(__name__)
LOG_SCALE_MAX = math.log(100.0)  # CLIP clamps its temperature at 100; open_clip's ClipLoss does not


def default_model_cfg(image_size: int = 64, context_length: int = 48) -> dict:
    """open_clip config of the embedded model: a small ModifiedResNet and a 2-layer text transformer."""
    return {
        "embed_dim": 128,
        "vision_cfg": {"image_size": image_size, "layers": [1, 1, 1, 1], "width": 16, "head_width": 64},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
    }


@dataclass
class TrainConfig:
    minutes: float = 10.0  # wall-clock budget; the learning-rate schedule follows elapsed time
    steps: int = 0  # if > 0, train this many steps instead (deterministic schedule)
    batch_size: int = 128  # scenes per batch, variants included
    lr: float = 1e-3  # AdamW peak learning rate (3e-3 collapsed to chance in a probe)
    weight_decay: float = 0.1  # on matrices only, not on norms, biases or the temperature
    warmup: float = 0.03  # fraction of the budget spent warming up
    group_fraction: float = 0.5  # share of each batch made of groups of minimal variants
    group_size: int = 4  # scenes per group: one and its variants
    aux_weight: float = 1.0  # initial weight of the grid-probe loss (see GridProbe); 0 = pure contrastive
    aux_until: float = 0.8  # fraction of the budget over which that weight decays to zero
    seed: int = 0  # seeds the scene stream and the initial weights
    world: str = ""  # the mbm cache holding `prepare-data`'s emoji arrays: train on the widened world; "" = shapes
    emoji_fraction: float = 0.5  # widened world: share of each batch that is emoji concepts
    holdout_style: str = "twemoji"  # widened world: the art style never trained on
    phrase_share: float = 0.5  # widened world: English emoji captions said as people type them ("a dog")
    background_weights: dict = field(default_factory=dict)  # widened world: kind -> weight of shapes backgrounds
    locale_weights: dict = field(default_factory=dict)  # widened world: locale -> weight among non-English captions
    vary_share: float = 0.0  # widened world: shapes whose photo/texture background is varied further (Look.vary)
    clutter_share: float = 0.0  # of those, photos that are collages of the training styles' things (Look.clutter)
    hard_share: float = 0.0  # shape groups whose first variant is the nearest shape (make_batch)
    precision: str = "fp32"  # "bf16": the towers run under bfloat16 autocast (weights and loss stay fp32)
    device: str = "cpu"  # where the steps run ("cuda": the same recipe on a GPU; batches are still made on the CPU)
    model_cfg: dict = field(default_factory=default_model_cfg)


def make_batch(rng: random.Random, batch_size: int, group_fraction: float, group_size: int = 4,
               new_scene: Callable[[random.Random], Scene] | None = None,
               hard_share: float = 0.0) -> tuple[list[Scene], list[str]]:
    """Scenes and captions for one batch; `group_fraction` of them come in groups of minimal variants.

    A group is one scene and `group_size - 1` copies with one mentioned object's shape (or, in a
    quarter of the groups, colour) changed, each captioned with the same phrasing; captions within a
    group then differ in exactly one word. `new_scene(rng)` makes each fresh scene (default: the `train` split's;
    the widened world passes one that gives each scene a `backgrounds.Look`, which its variants keep). In
    `hard_share` of the shape groups the first variant takes the shape nearest in silhouette (`nearest_shape`: a
    circle becomes a hexagon), the pair the loss otherwise meets in a group only by chance.
    """
    new_scene = new_scene or (lambda r: make_scene("train", r.randrange(2**40)))
    scenes, texts = [], []
    for _ in range(int(batch_size * group_fraction) // group_size):
        scene = new_scene(rng)
        caption_seed = rng.random()
        text, mentioned = captions(scene, random.Random(caption_seed))
        group = [(scene, text)]
        attr = "shape" if rng.random() < 0.75 else "colour"
        hard = attr == "shape" and hard_share > 0 and rng.random() < hard_share  # no draw at 0: streams stay
        for variant in _variants(scene, rng.choice(mentioned), attr, group_size - 1, rng, hard):
            variant_text = captions(variant, random.Random(caption_seed))[0]
            if variant_text != text:  # the caption names what changed: a pair to learn from
                group.append((variant, variant_text))
        while len(group) < group_size:
            extra = new_scene(rng)
            group.append((extra, captions(extra, rng)[0]))
        scenes += [s for s, _ in group]
        texts += [t for _, t in group]
    while len(scenes) < batch_size:
        scene = new_scene(rng)
        scenes.append(scene)
        texts.append(captions(scene, rng)[0])
    return scenes[:batch_size], texts[:batch_size]


def _variants(scene: Scene, i: int, attr: str, n: int, rng: random.Random, hard: bool = False) -> list[Scene]:
    """`n` copies of the scene with object `i`'s shape (or colour) changed to distinct new values; with `hard`, the
    object's `nearest_shape` first."""
    o = scene.objects[i]
    values = [v for v in (SHAPES if attr == "shape" else COLOURS) if v != getattr(o, attr)]
    out = []
    order = rng.sample(values, len(values))
    if hard:
        nearest = nearest_shape(o.shape)
        order.remove(nearest)
        order.insert(0, nearest)
    for v in order:
        shape, colour = (v, o.colour) if attr == "shape" else (o.shape, v)
        if (colour, shape) not in HELD_OUT:
            out.append(scene.replace_object(i, shape=shape, colour=colour))
        if len(out) == n:
            break
    return out


def grid_labels(scenes: list[Scene]) -> torch.Tensor:
    """`(B, 2, 9)` long: the shape and colour index in each grid cell, `len(SHAPES)`/`len(COLOURS)` if empty."""
    out = torch.empty(len(scenes), 2, 9, dtype=torch.long)
    out[:, 0], out[:, 1] = len(SHAPES), len(COLOURS)
    colours = list(COLOURS)
    for b, scene in enumerate(scenes):
        for o in scene.objects:
            out[b, 0, 3 * o.row + o.col] = SHAPES.index(o.shape)
            out[b, 1, 3 * o.row + o.col] = colours.index(o.colour)
    return out


class GridProbe(torch.nn.Module):
    """Auxiliary head, training only: reads each cell's shape and colour off the image embedding.

    Contrastive learning alone is slow to bootstrap shape (the text tower cannot tell shape words
    apart until the image tower sees shape, and vice versa). Labels come free with the synthetic
    world, so this head gives the image tower a direct signal early; its weight decays to zero,
    and the saved model is a plain open_clip CLIP without it.
    """

    def __init__(self, embed_dim: int):
        super().__init__()
        self.shape = torch.nn.Linear(embed_dim, 9 * (len(SHAPES) + 1))
        self.colour = torch.nn.Linear(embed_dim, 9 * (len(COLOURS) + 1))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b = features.shape[0]
        shape_logits = self.shape(features).view(b * 9, -1)  # (B * 9, shapes + empty)
        colour_logits = self.colour(features).view(b * 9, -1)  # (B * 9, colours + empty)
        ce = torch.nn.functional.cross_entropy
        # -100 marks images with no grid (emoji in the widened world): ignored
        return ce(shape_logits, labels[:, 0].reshape(-1)) + ce(colour_logits, labels[:, 1].reshape(-1))


def _pixels(scenes: list[Scene], size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    arr = np.stack([np.asarray(render(s, size)) for s in scenes])  # (B, H, W, 3) uint8
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)  # (B, 3, H, W)
    return (x - mean) / std


def _batches(cfg: TrainConfig, tokenizer, mean, std, stop: threading.Event) -> queue.Queue:
    if cfg.world:
        from mbm.train.world import world_batches
        return world_batches(cfg, tokenizer, mean, std, stop)
    rng = random.Random(f"train-batches/{cfg.seed}")
    size = cfg.model_cfg["vision_cfg"]["image_size"]

    def make():
        scenes, texts = make_batch(rng, cfg.batch_size, cfg.group_fraction, cfg.group_size)
        return _pixels(scenes, size, mean, std), tokenizer(texts), grid_labels(scenes)
    return background_batches(make, stop, "mbm-batches")


def encode_text(model, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """open_clip `CLIP.encode_text` for `(B, T)` tokens with T up to the context length: captions trimmed to a
    batch's longest cost only their own length (the causal mask keeps the result the same)."""
    from open_clip.transformer import text_global_pool
    t = tokens.shape[1]
    x = model.token_embedding(tokens) + model.positional_embedding[:t]  # (B, T, W)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:t, :t]))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    x = x @ model.text_projection  # (B, D)
    return torch.nn.functional.normalize(x, dim=-1) if normalize else x


def build_model(cfg: TrainConfig):
    """A fresh open_clip CLIP with its tokenizer and normalisation constants."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    torch.manual_seed(cfg.seed)
    model = open_clip.CLIP(**cfg.model_cfg)
    tokenizer = open_clip.SimpleTokenizer(context_length=cfg.model_cfg["text_cfg"]["context_length"])
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return model, tokenizer, mean, std


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
                             fused=True)  # one kernel over all tensors: 11 ms a step instead of 45 on the world model


def lr_at(progress: float, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero; `progress` runs from 0 to 1."""
    return cosine_lr(progress, cfg.lr, cfg.warmup)


def aux_weight_at(progress: float, cfg: TrainConfig) -> float:
    """The grid probe's loss weight: `aux_weight` falling linearly to 0 at `aux_until` (<= 0: off)."""
    if cfg.aux_until <= 0:
        return 0.0
    return cfg.aux_weight * max(0.0, 1 - progress / cfg.aux_until)


def train(cfg: TrainConfig, on_step: Callable[[int, float, float], None] | None = None,
          should_stop: Callable[[], bool] | None = None, on_start: Callable[[torch.nn.Module], None] | None = None):
    """Train a fresh model; returns `(model, history)` where history holds `(step, seconds, loss)`.

    Args:
        cfg: the run's settings; `steps` > 0 fixes the number of steps, else `minutes` bounds the time.
        on_step: called after each step with (step, progress 0-1, loss); a terminal bar or a page hooks in here.
        should_stop: polled each step; return True to end early (the page's cancel button).
        on_start: called once with the fresh model before the first step; live training keeps it to evaluate
            between steps (it must leave the model in train mode).
    """
    from open_clip import ClipLoss

    from mbm.models._device import resolve_device
    device = resolve_device(cfg.device)  # refuses a CUDA device torch cannot see
    model, tokenizer, mean, std = build_model(cfg)
    model.to(device).train()
    if on_start:
        on_start(model)
    probe = GridProbe(cfg.model_cfg["embed_dim"]).to(device)
    opt, loss_fn = _optimizer(torch.nn.ModuleList([model, probe]), cfg), ClipLoss()
    stop = threading.Event()
    batches = _batches(cfg, tokenizer, mean, std, stop)

    bf16 = cfg.precision == "bf16"

    def loss_at(batch, progress: float) -> torch.Tensor:
        images, tokens, labels = (t.to(device, non_blocking=True) for t in batch)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            img = model.encode_image(images)  # (B, D), not yet normalised
            txt = encode_text(model, tokens, normalize=False)  # (B, D)
        img, txt = img.float(), torch.nn.functional.normalize(txt.float(), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        loss = loss_fn(torch.nn.functional.normalize(img, dim=-1), txt, scale)
        aux_weight = aux_weight_at(progress, cfg)
        return loss + aux_weight * probe(img, labels) if aux_weight > 0 else loss

    def clamp_scale() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, LOG_SCALE_MAX)
    try:
        history = run_steps(opt, batches, loss_at, steps=cfg.steps, minutes=cfg.minutes,
                            lr_at=lambda progress: lr_at(progress, cfg), on_step=on_step, should_stop=should_stop,
                            after_step=clamp_scale)
    finally:
        stop.set()
    return model.cpu().eval(), history


def save(model: torch.nn.Module, cfg: TrainConfig, out: Path) -> Path:
    """Write open_clip's folder layout: `open_clip_config.json` and fp16 `open_clip_model.safetensors`."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from safetensors.torch import save_file
    out.mkdir(parents=True, exist_ok=True)
    # Halve the floats only: BatchNorm's step counters stay integers.
    state = {k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in model.state_dict().items()}
    tmp = out / "open_clip_model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt", "trained_by": "mbm train-clip"})
    tmp.replace(out / "open_clip_model.safetensors")
    config = {
        "model_cfg": cfg.model_cfg,
        "preprocess_cfg": {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD),
                           "interpolation": "bicubic", "resize_mode": "squash"},
        # the cache's path is this machine's: the recipe says only that the world came from prepare-data's cache
        "mbm_train_cfg": {k: ("prepare-data cache" if k == "world" and v else v)
                          for k, v in asdict(cfg).items() if k != "model_cfg"},
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    from mbm.train.scope import write_for
    write_for(out, cfg.world or None)  # scope.json: what the model read, for the page to say when a query is beyond
    return out

"""SeedNet: the seed design's multimodal model, built from scratch and trained end to end on Shapes-VQA.

Three branches turn an image and a question into features of the same size `d`: a CNN over the image
(a 3 x 3 grid of features is kept and flattened, because questions ask "what shape is at the top left"),
a GRU over the question's word embeddings, and a tiny CNN over the image shrunk to 12 x 12 pixels (the
seed's "colour information"). They are fused by concatenation, `H = Concat([H_I, H_W, H_C])`, and a head
maps `H` to one logit per answer in `ANSWERS`.

The seed's head is literally `Y = Linear(H)` (`hidden=0` here). Then `Y = W_I H_I + W_W H_W + W_C H_C + b`:
the logits are a sum of an image-only term and a question-only term, so the model cannot express "the answer
depends on the image *given* the question" (which object's colour to report depends on which shape was asked
about). It can only learn answer priors per question and per image. The default (`hidden > 0`) puts one
hidden ReLU layer between the concatenation and the linear head, which lets the two modalities interact.
Images are normalised with plain constants (`MEAN`, `STD`: per-channel statistics of 2000 rendered `train`
scenes, rounded). Training draws fresh `train` scenes for every batch and asks several questions of each (the
image is encoded once per scene); test/val/heldout are never seen.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mbm.data.language import questions
from mbm.data.shapes import Scene, make_scene, render
from mbm.data.vqa import ANSWER_INDEX, ANSWERS, MAX_WORDS, QUESTION_TYPES, WORDS, examples, tokenize
from mbm.train._loop import background_batches, cosine_lr, run_steps

log = logging.getLogger(__name__)
MEAN = (0.52, 0.51, 0.51)  # per-channel mean of rendered train scenes, RGB in [0, 1]
STD = (0.14, 0.12, 0.14)  # per-channel standard deviation of the same
WEIGHTS, CONFIG = "seednet.safetensors", "seednet.json"


@dataclass
class SeedNetConfig:
    image_size: int = 64  # pixels per side of the rendered scenes
    channels: tuple[int, ...] = (32, 64, 128)  # image CNN widths; each block's stride-2 conv halves the resolution
    grid: int = 3  # the image CNN's features are pooled to a grid x grid map and flattened (keeps positions)
    word_dim: int = 32  # word embedding size
    gru_hidden: int = 128  # GRU state size; its last state is the question's feature
    colour_size: int = 12  # side of the shrunk image seen by the colour branch
    colour_channels: int = 32  # width of the colour branch's tiny CNN
    d: int = 256  # shared size of every branch's projection; H has 3 * d features
    hidden: int = 512  # width of the ReLU layer between H and the head; 0 = the seed's literal Linear(H)
    dropout: float = 0.0  # on H during training; batches are always fresh scenes, so little to regularise

    def __post_init__(self):
        self.channels = tuple(self.channels)  # JSON gives a list back


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class SeedNet(nn.Module):
    """Image CNN + question GRU + colour CNN, projected to `d`, concatenated, then an (MLP) head."""

    def __init__(self, cfg: SeedNetConfig):
        super().__init__()
        self.cfg = cfg
        widths = (3, *cfg.channels)
        blocks = [_block(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:])]  # 64 -> 32 -> 16 -> 8 pixels
        # One more block at the last resolution: a receptive field (31 px) wider than the largest shape (20 px).
        self.image = nn.Sequential(*blocks, _block(widths[-1], widths[-1], stride=1), nn.AdaptiveAvgPool2d(cfg.grid))
        self.image_proj = nn.Linear(widths[-1] * cfg.grid ** 2, cfg.d)
        self.embed = nn.Embedding(len(WORDS), cfg.word_dim, padding_idx=0)
        self.gru = nn.GRU(cfg.word_dim, cfg.gru_hidden, batch_first=True)
        self.word_proj = nn.Linear(cfg.gru_hidden, cfg.d)
        c = cfg.colour_channels
        self.colour = nn.Sequential(_block(3, c, stride=1), nn.Conv2d(c, c, 1), nn.ReLU(inplace=True),
                                    nn.AdaptiveAvgPool2d(cfg.grid))
        self.colour_proj = nn.Linear(c * cfg.grid ** 2, cfg.d)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.hidden > 0:
            self.head = nn.Sequential(nn.Linear(3 * cfg.d, cfg.hidden), nn.ReLU(inplace=True),
                                      nn.Linear(cfg.hidden, len(ANSWERS)))
        else:
            self.head = nn.Linear(3 * cfg.d, len(ANSWERS))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` normalised images -> `(B, d)` features of the image CNN."""
        return F.relu(self.image_proj(self.image(images).flatten(1)))  # (B, C * grid^2) -> (B, d)

    def encode_words(self, words: torch.Tensor) -> torch.Tensor:
        """`(B, MAX_WORDS)` word ids, 0-padded at the end -> `(B, d)` from the GRU's last real step."""
        lengths = (words != 0).sum(1).clamp(min=1).cpu()  # (B,)
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(words), lengths, batch_first=True,
                                                   enforce_sorted=False)  # from (B, T, word_dim)
        _, last = self.gru(packed)  # (1, B, gru_hidden)
        return F.relu(self.word_proj(last[0]))  # (B, d)

    def encode_colour(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` -> `(B, d)`: a tiny CNN over the image shrunk to `colour_size` pixels a side."""
        small = F.adaptive_avg_pool2d(images, self.cfg.colour_size)  # (B, 3, s, s)
        return F.relu(self.colour_proj(self.colour(small).flatten(1)))  # (B, c * grid^2) -> (B, d)

    def fuse(self, h_image: torch.Tensor, h_words: torch.Tensor, h_colour: torch.Tensor) -> torch.Tensor:
        """Three `(B, d)` branch features -> `(B, len(ANSWERS))` logits: `head(Concat([H_I, H_W, H_C]))`."""
        return self.head(self.drop(torch.cat([h_image, h_words, h_colour], 1)))  # (B, 3d) -> (B, len(ANSWERS))

    def forward(self, images: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` float normalised images and `(B, MAX_WORDS)` long word ids -> `(B, len(ANSWERS))` logits."""
        return self.fuse(self.encode_image(images), self.encode_words(words), self.encode_colour(images))


def pixels(scenes: list[Scene], size: int = 64) -> torch.Tensor:
    """Render scenes and normalise them with `MEAN`/`STD`: `(B, 3, size, size)` float32."""
    arr = np.stack([np.asarray(render(s, size)) for s in scenes])  # (B, H, W, 3) uint8
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)  # (B, 3, H, W)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def make_batch(rng: random.Random, batch_size: int, size: int = 64, per_scene: int = 1) -> tuple[torch.Tensor, ...]:
    """Fresh `train` scenes with `per_scene` random questions each (distinct while the scene has enough).

    Returns:
        `(images (B, 3, H, W), words (B * per_scene, MAX_WORDS), labels (B * per_scene,))`; a scene's
        questions are consecutive rows.
    """
    scenes = [make_scene("train", rng.randrange(2**40)) for _ in range(batch_size)]
    asked = [q for s in scenes for q in _pick(rng, questions(s), per_scene)]  # (question, answer, type)
    words = torch.tensor([tokenize(q) for q, _, _ in asked], dtype=torch.long)  # (B * per_scene, MAX_WORDS)
    labels = torch.tensor([ANSWER_INDEX[a] for _, a, _ in asked], dtype=torch.long)  # (B * per_scene,)
    return pixels(scenes, size), words, labels


def _pick(rng: random.Random, items: list, k: int) -> list:
    return rng.sample(items, k) if k <= len(items) else rng.choices(items, k=k)


def _batches(seed: int, batch_size: int, size: int, per_scene: int, stop: threading.Event) -> queue.Queue:
    """Batches in a fixed order for a seed, rendered on a helper thread."""
    rng = random.Random(f"seednet-batches/{seed}")
    return background_batches(lambda: make_batch(rng, batch_size, size, per_scene), stop, "seednet-batches")


def lr_at(progress: float, lr: float, warmup: float = 0.03) -> float:
    """Linear warm-up over `warmup` of the run, then cosine decay to zero; `progress` runs from 0 to 1."""
    return cosine_lr(progress, lr, warmup)


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]  # matrices and kernels; not norms or biases
    rest = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr)


def _device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def batch_loss(model: SeedNet, images: torch.Tensor, words: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a `make_batch` batch; each image is encoded once and shared by its scene's questions."""
    k = len(words) // len(images)  # questions per scene
    h_image = model.encode_image(images).repeat_interleave(k, 0)  # (B * k, d)
    h_colour = model.encode_colour(images).repeat_interleave(k, 0)  # (B * k, d)
    return F.cross_entropy(model.fuse(h_image, model.encode_words(words), h_colour), labels)


def train_seednet(cfg: SeedNetConfig | None = None, *, steps: int = 0, minutes: float = 10.0, batch_size: int = 128,
                  per_scene: int = 4, lr: float = 2e-3, weight_decay: float = 0.05, seed: int = 0,
                  device: str | None = None, on_step: Callable[[int, float, float], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[SeedNet, list[tuple[int, float, float]]]:
    """Train a fresh SeedNet on Shapes-VQA `train` scenes; returns `(model in eval mode, history)`.

    Args:
        cfg: the architecture; default `SeedNetConfig()`.
        steps: if > 0, train exactly this many steps (deterministic schedule); else `minutes` bounds the time.
        batch_size, per_scene: scenes per batch and questions asked of each (1 = one random question per scene;
            more gives the image CNN more signal per rendered and encoded image).
        lr, weight_decay: AdamW's peak learning rate (warm-up, then cosine decay) and weight decay.
        seed: seeds the initial weights and the stream of scenes and questions.
        device: "cpu", "cuda", ...; default CUDA when present.
        on_step: called after each step with (step, progress 0-1, loss).
        should_stop: polled each step; return True to end early.
    Returns:
        the model and its history of `(step, seconds, loss)`.
    """
    cfg, dev = cfg or SeedNetConfig(), _device(device)
    torch.manual_seed(seed)
    model = SeedNet(cfg).to(dev).train()
    opt = _optimizer(model, lr, weight_decay)
    stop = threading.Event()
    batches = _batches(seed, batch_size, cfg.image_size, per_scene, stop)
    start = time.perf_counter()
    try:
        history = run_steps(opt, batches, lambda batch, _: batch_loss(model, *(t.to(dev, non_blocking=True)
                                                                               for t in batch)),
                            steps=steps, minutes=minutes, lr_at=lambda progress: lr_at(progress, lr),
                            on_step=on_step, should_stop=should_stop)
    finally:
        stop.set()
    log.info("trained SeedNet for %d steps in %.0f s", len(history), time.perf_counter() - start)
    return model.eval(), history


@torch.inference_mode()
def evaluate_seednet(model: SeedNet, split: str, n_scenes: int, start: int = 0, batch_size: int = 256) -> dict:
    """Accuracy on every question of scenes `start .. start + n_scenes - 1` of a split.

    Each scene's image features are computed once and shared by its questions (the model is in eval mode,
    so this gives the same logits as `model(images, words)` per question).
    Returns:
        `{"all": acc, "colour": acc, "shape_at": acc, "count": acc, "exists": acc}`, fractions in [0, 1].
    """
    exs = examples(split, n_scenes, start)
    dev, was_training = next(model.parameters()).device, model.training
    model.eval()
    h_image, h_colour = _scene_features(model, [make_scene(split, i) for i in range(start, start + n_scenes)],
                                        batch_size, dev)  # (N, d) each
    scene_of = torch.tensor([e.index - start for e in exs], device=dev)  # (Q,) row of each question's scene
    words = torch.tensor([tokenize(e.question) for e in exs], dtype=torch.long, device=dev)  # (Q, MAX_WORDS)
    preds = torch.cat([model.fuse(h_image[s], model.encode_words(w), h_colour[s]).argmax(1)
                       for s, w in zip(scene_of.split(batch_size), words.split(batch_size))]).cpu()  # (Q,)
    model.train(was_training)
    correct = preds == torch.tensor([e.label for e in exs])  # (Q,)
    qtypes = np.array([e.qtype for e in exs])
    out = {"all": round(correct.float().mean().item(), 4)}
    for t in QUESTION_TYPES:
        mask = torch.from_numpy(qtypes == t)
        out[t] = round(correct[mask].float().mean().item(), 4) if mask.any() else float("nan")
    return out


def _scene_features(model: SeedNet, scenes: list[Scene], batch_size: int,
                    dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-branch and colour-branch features of every scene, rendered and encoded in batches: two `(N, d)`."""
    h_image, h_colour = [], []
    for i in range(0, len(scenes), batch_size):
        images = pixels(scenes[i:i + batch_size], model.cfg.image_size).to(dev)  # (b, 3, H, W)
        h_image.append(model.encode_image(images))
        h_colour.append(model.encode_colour(images))
    return torch.cat(h_image), torch.cat(h_colour)


def save_seednet(model: SeedNet, cfg: SeedNetConfig, folder: str | Path, metrics: dict | None = None,
                 training: dict | None = None) -> Path:
    """Write `seednet.safetensors` (fp32 weights only) and `seednet.json` (config, vocabularies, metrics).

    Args:
        model, cfg: the trained model and its architecture.
        folder: created if missing.
        metrics: e.g. `{"test": evaluate_seednet(...), "heldout": ...}`; recorded as given.
        training: how it was trained (steps, batch size, seconds, machine); recorded as given.
    """
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "trained_by": "mbm.train.seednet"})
    tmp.replace(folder / WEIGHTS)
    info = {"config": asdict(cfg), "answers": list(ANSWERS), "words": list(WORDS), "max_words": MAX_WORDS,
            "normalisation": {"mean": list(MEAN), "std": list(STD)}}
    info.update({k: v for k, v in (("metrics", metrics), ("training", training)) if v is not None})
    (folder / CONFIG).write_text(json.dumps(info, indent=2) + "\n")
    return folder


def load_seednet(folder: str | Path, device: str = "cpu") -> SeedNet:
    """A SeedNet from `save_seednet`'s folder, in eval mode; only safetensors are read, never a pickle.

    Raises:
        FileNotFoundError: the folder lacks `seednet.json` or `seednet.safetensors`.
        ValueError: the weights are not safetensors, or the vocabularies differ from this version's.
    """
    from safetensors.torch import load_file
    folder = Path(folder)
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found; save_seednet writes {CONFIG} and {WEIGHTS}")
    info = json.loads((folder / CONFIG).read_text())
    if info["answers"] != list(ANSWERS) or info["words"] != list(WORDS):
        raise ValueError(f"{folder / CONFIG} was trained with other answers or words than mbm.data.vqa's")
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as e:  # safetensors raises its own error type for anything that is not its format
        raise ValueError(f"{folder / WEIGHTS} is not a readable safetensors file: {e}") from e
    model = SeedNet(SeedNetConfig(**info["config"]))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def answer_logits(model: SeedNet, image: Image.Image, question: str) -> torch.Tensor:
    """SeedNet's logits `(len(ANSWERS),)` for any image: squashed to its input size, normalised like training."""
    size = model.cfg.image_size
    arr = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255
    x = (torch.from_numpy(arr).permute(2, 0, 1) - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    return model(x.unsqueeze(0), torch.tensor([tokenize(question)]))[0]

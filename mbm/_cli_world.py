"""The command line of the widened world: `prepare-data`, `train-clip --world`, `eval --world`.

`mbm.__main__` wires these into its parser; this module prints (the library logs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def cache_of(args) -> Path:
    """The mbm cache: `--cache`, else $MBM_CACHE, else ~/.cache/mbm (read in one place, `EngineConfig`)."""
    from mbm.engine import EngineConfig
    return EngineConfig.from_env(cache_dir=getattr(args, "cache", None)).cache_path()


def add_prepare_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", default=None, help="mbm's cache folder (default $MBM_CACHE or ~/.cache/mbm)")
    p.add_argument("--size", type=int, default=64, help="side of the rendered emoji arrays in pixels (default 64)")


def _world_flags(p: argparse.ArgumentParser, world: str, holdout: str) -> None:
    """--world, --cache and --holdout-style, which train-clip and eval share."""
    p.add_argument("--world", action="store_true", help=f"{world} (needs `prepare-data` first)")
    p.add_argument("--cache", default=None, help="with --world: the cache prepare-data filled")
    p.add_argument("--holdout-style", default="twemoji", help=f"with --world: {holdout}")


def _weights(text: str, names: tuple[str, ...], what: str, example: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        try:
            out[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: write {what.upper()}=WEIGHT, e.g. {example}") from None
        if name.strip() not in names or out[name.strip()] < 0:
            raise argparse.ArgumentTypeError(f"{part!r}: the {what}s are {', '.join(names)}, weights >= 0")
    return out


def background_weights(text: str) -> dict[str, float]:
    """`texture=1.5,photo=2` -> {"texture": 1.5, "photo": 2.0}; an unknown kind or a bad weight is an error."""
    from mbm.data.backgrounds import KINDS
    return _weights(text, KINDS, "kind", "photo=2")


def locale_weights(text: str) -> dict[str, float]:
    """`ja=2,ru=2` -> {"ja": 2.0, "ru": 2.0}; an unknown locale (or English, which has its own share) is an error."""
    from mbm.data.emoji import LOCALES
    return _weights(text, tuple(loc for loc in LOCALES if loc != "en"), "locale", "ja=2")


def add_train_flags(p: argparse.ArgumentParser) -> None:
    _world_flags(p, "train mbm-world: widened shapes + emoji concepts", "the art style never trained on")
    p.add_argument("--emoji-fraction", type=float, default=0.5, help="with --world: emoji share of each batch")
    p.add_argument("--phrase-share", type=float, default=0.5,
                   help="with --world: English emoji captions phrased as people type them ('a dog'), not bare labels")
    p.add_argument("--background-weights", type=background_weights, default={}, metavar="KIND=W,...",
                   help="with --world: make some shapes backgrounds likelier, e.g. texture=1.5,photo=2 (others 1)")
    p.add_argument("--locale-weights", type=locale_weights, default={}, metavar="LOCALE=W,...",
                   help="with --world: make some non-English caption locales likelier, e.g. ja=2,ru=2 (others 1)")
    p.add_argument("--vary-share", type=float, default=0.0,
                   help="with --world: share of shapes whose photo or texture background is varied further "
                        "(recoloured photos, more patterns) beyond what the evaluation draws")
    p.add_argument("--clutter-share", type=float, default=0.0,
                   help="with --world and --vary-share: share of those varied photo backgrounds that are collages "
                        "of the training art styles' emoji (things of every size heaped up, as in a photo)")
    p.add_argument("--hard-share", type=float, default=0.0,
                   help="with --world: share of the minimal-variant groups that change a shape to the one nearest "
                        "in silhouette (a circle to a hexagon), the hardest negative")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="with --world: bf16 runs the towers under bfloat16 autocast (weights stay fp32); "
                        "faster where the CPU has AMX or AVX512-BF16, or on a GPU")
    p.add_argument("--width", type=int, default=32, help="with --world: image tower width")
    p.add_argument("--embed-dim", type=int, default=256, help="with --world: shared embedding size")
    p.add_argument("--text-width", type=int, default=256, help="with --world: text tower width")
    p.add_argument("--text-layers", type=int, default=2, help="with --world: text tower layers")
    p.add_argument("--image-size", type=int, default=64, help="with --world: image side in pixels")
    p.add_argument("--curve-every", type=int, default=250, help="with --world: steps between curve points")


def add_eval_flags(p: argparse.ArgumentParser) -> None:
    _world_flags(p, "also emoji retrieval and shapes robustness", "the art style held out of training")
    p.add_argument("--robust", type=int, default=200, help="with --world: single shapes per robustness row")
    p.add_argument("--card", action="store_true",
                   help="with --world and a model folder: write MODEL_CARD.md and metrics.json into it")
    p.add_argument("--baseline", default=None,
                   help="with --card: `eval --world --json` of mbm-shapes (default: measure it now)")


def prepare_data(args) -> int:
    from mbm.data import emoji
    out = emoji.prepare(cache_of(args), size=args.size)
    arrays, concepts = emoji.load(cache_of(args), args.size)
    print(f"{len(concepts)} concepts in {', '.join(arrays)} at {args.size} px: {out}")
    return 0


def train_world(args) -> int:
    import torch

    from mbm.train.clip import TrainConfig, save
    from mbm.train.world import train_world as train
    from mbm.train.world import world_model_cfg
    if args.threads:
        torch.set_num_threads(args.threads)
    model_cfg = world_model_cfg(args.image_size, args.width, args.embed_dim, args.text_width, args.text_layers)
    cfg = TrainConfig(minutes=args.minutes, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      aux_weight=args.aux_weight, aux_until=args.aux_until, world=str(cache_of(args)),
                      emoji_fraction=args.emoji_fraction, holdout_style=args.holdout_style,
                      phrase_share=args.phrase_share, background_weights=args.background_weights,
                      locale_weights=args.locale_weights, vary_share=args.vary_share,
                      clutter_share=args.clutter_share, hard_share=args.hard_share, precision=args.precision,
                      device=args.device, model_cfg=model_cfg)
    out = Path(args.out)

    def on_row(row: dict) -> None:
        print(json.dumps(row), flush=True)
    model, history, curve = train(cfg, every=args.curve_every, on_row=on_row)
    save(model, cfg, out)
    (out / "curve.json").write_text(json.dumps({"history_tail": history[-5:], "curve": curve}, indent=1) + "\n")
    print(f"saved {out} ({len(history)} steps in {history[-1][1] / 60:.1f} min); evaluate with "
          f"`python -m mbm eval --world --model {out}`")
    return 0


def eval_world(args) -> int:
    from mbm.evaluate_world import world_report
    from mbm.models import create_model
    encoder = create_model(args.model, device=args.device)
    start = time.perf_counter()
    report = world_report(encoder, cache_of(args), args.holdout_style, args.pairs, args.zero_shot, args.robust)
    report["eval_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else summary(report))
    if args.card:
        write_card(args, report)
    return 0


def write_card(args, report: dict) -> None:
    import os
    import platform

    import torch

    from mbm.evaluate_world import world_report
    from mbm.models import create_model
    from mbm.train.world_card import write_world_card
    if args.baseline:
        baseline = json.loads(Path(args.baseline).read_text())
    else:
        baseline = world_report(create_model("mbm-shapes", device=args.device), cache_of(args), args.holdout_style,
                                args.pairs, args.zero_shot, args.robust)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU threads, torch {torch.__version__}"
    card = write_world_card(Path(args.model), report, baseline, machine)
    print(f"model card: {card}")


def summary(report: dict) -> str:
    """A few lines a person reads: emoji R@10 per style, robustness per row, shapes retrieval."""
    lines = []
    for key in ("emoji_holdout", "emoji_train"):
        r = report[key]
        lines.append(f"emoji {r['style']:8} ({r['concepts']} concepts): t->i R@1 {r['t2i_r1']:.1%} "
                     f"R@10 {r['t2i_r10']:.1%} (other locales R@10 {r['t2i_r10_other_locales']:.1%}), "
                     f"i->t R@1 {r['i2t_r1']:.1%}")
    for name, r in report["robustness"].items():
        lines.append(f"  {name:22} joint {r['joint']:.1%}  shape {r['shape']:.1%}")
    for split, m in report["shapes"].items():
        lines.append(f"shapes {split}: " + "  ".join(f"{k} {v:.1%}" for k, v in m.items()))
    return "\n".join(lines)

"""Command line, the commands that train and measure models: train-clip, eval, train-fusion (and SeedNet),
eval-fusion, eval-late-fusion, make-gallery; each as the function that runs it and the one adding its flags."""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _training_bar(desc: str, steps: int = 0):
    """A tqdm bar fed by a training loop's `on_step(step, progress, loss)`: in steps when the run counts them,
    else in percent of its time budget."""
    from tqdm import tqdm
    total = steps or 100
    with tqdm(total=total, unit="step" if steps else "%", desc=desc) as bar:
        def on_step(step: int, progress: float, loss: float) -> None:
            bar.n = step if steps else round(progress * total)
            bar.set_postfix(loss=f"{loss:.3f}", step=step, refresh=False)
            bar.refresh()
        yield on_step


def _train_clip(args) -> int:
    if args.world:
        from mbm._cli_world import train_world
        return train_world(args)
    import torch

    from mbm.evaluate import evaluate
    from mbm.models import create_model
    from mbm.train.card import metrics_table, write_card
    from mbm.train.clip import TrainConfig, save, train
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(minutes=args.minutes, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      aux_weight=args.aux_weight, aux_until=args.aux_until, device=args.device)
    with _training_bar("train-clip", args.steps) as on_step:
        model, history = train(cfg, on_step=on_step)
    out = save(model, cfg, Path(args.out))
    encoder = create_model(str(out), device="cpu")
    start = time.perf_counter()
    metrics = evaluate(encoder, n_pairs=args.pairs, n_zero_shot=args.zero_shot)
    card = write_card(out, model, cfg, history, metrics, time.perf_counter() - start)
    print(metrics_table(metrics))
    print(f"saved {out} ({len(history)} steps); model card: {card}")
    return 0


def _eval(args) -> int:
    if args.world:
        from mbm._cli_world import eval_world
        return eval_world(args)
    from mbm.evaluate import evaluate
    from mbm.models import create_model
    from mbm.train.card import metrics_table
    encoder = create_model(args.model, device=args.device)
    metrics = evaluate(encoder, n_pairs=args.pairs, n_zero_shot=args.zero_shot)
    print(json.dumps(metrics, indent=2) if args.json else metrics_table(metrics))
    return 0


def _cli_world():
    import mbm._cli_world
    return mbm._cli_world


def _make_gallery(args) -> int:
    from mbm.data.sample import write_emoji, write_scenes
    if args.emoji:
        from mbm._cli_world import cache_of
        paths = write_emoji(args.out, cache_of(args), style=args.emoji, others=args.n)
        print(f"wrote {len(paths)} {args.emoji} emoji with their English labels to {args.out}")
        return 0
    paths = write_scenes(args.out, n=args.n, size=args.size, split=args.split, anywhere=args.anywhere)
    print(f"wrote {len(paths)} scenes with captions to {args.out}")
    return 0


def _train_seednet(args) -> int:
    from mbm.fusion import FUSION_HEADS
    from mbm.train.seednet import SeedNetConfig, evaluate_seednet, save_seednet, train_seednet
    start = time.perf_counter()
    with _training_bar("train SeedNet") as on_step:
        model, history = train_seednet(SeedNetConfig(), minutes=args.minutes, seed=args.seed, on_step=on_step)
    seconds = time.perf_counter() - start
    metrics = {split: {"n_scenes": args.eval_scenes, **evaluate_seednet(model, split, args.eval_scenes)}
               for split in ("test", "heldout")}
    out = Path(args.out) if args.out else FUSION_HEADS / "seednet"  # where Engine reads it, from any folder
    save_seednet(model, SeedNetConfig(), out, metrics=metrics,
                 training={"steps": len(history), "seconds": round(seconds, 1), "seed": args.seed})
    for split, m in metrics.items():
        print(f"{split}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in m.items() if k != "n_scenes"))
    print(f"saved SeedNet to {out} ({len(history)} steps in {seconds:.0f} s)")
    return 0


def _train_fusion(args) -> int:
    if args.backbone == "seednet":
        return _train_seednet(args)
    from mbm.fusion import FUSION_HEADS, STRATEGIES, save_heads
    from mbm.models import create_model
    from mbm.train.fusion import evaluate_fusion, fusion_table, train_fusion, write_fusion_card
    encoder = create_model(args.backbone, device=args.device or "cpu")
    strategies = STRATEGIES if args.strategy == "all" else tuple(args.strategy.split(","))
    start = time.perf_counter()
    heads = train_fusion(encoder, strategies, n_scenes=args.scenes, epochs=args.epochs, seed=args.seed,
                         log=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    metrics = evaluate_fusion(encoder, heads, n_scenes=args.eval_scenes)
    out = Path(args.out) if args.out else FUSION_HEADS / args.backbone.replace(":", "-").replace("/", "-")
    save_heads(heads, out, backbone=args.backbone, extra={
        "backbone_key": encoder.key, "train_scenes": args.scenes, "epochs": args.epochs, "seed": args.seed,
        "train_seconds": round(seconds, 1), "eval_scenes": args.eval_scenes, "metrics": metrics})
    write_fusion_card(out, json.loads((out / "heads.json").read_text()))
    print(fusion_table(metrics))
    print(f"saved {len(heads)} heads to {out} (trained in {seconds:.0f} s)")
    return 0


def _eval_fusion(args) -> int:
    from mbm.fusion import FUSION_HEADS, load_heads
    from mbm.models import create_model
    from mbm.train.fusion import evaluate_fusion, fusion_table, write_fusion_card
    args.heads = args.heads or str(FUSION_HEADS / "mbm-shapes")
    heads, meta = load_heads(Path(args.heads))
    encoder = create_model(meta["backbone"], device=args.device or "cpu")
    metrics = evaluate_fusion(encoder, heads, n_scenes=args.scenes)
    if args.record:  # keep the measured table with the heads (e.g. latency re-measured on a quiet machine)
        meta.update(metrics=metrics, eval_scenes=args.scenes)
        (Path(args.heads) / "heads.json").write_text(json.dumps(meta, indent=2))
        write_fusion_card(Path(args.heads), meta)
    print(json.dumps(metrics, indent=2) if args.json else fusion_table(metrics))
    return 0


def _eval_late_fusion(args) -> int:
    import tempfile

    from mbm.engine import Engine, EngineConfig
    from mbm.evaluate import late_fusion_study
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(EngineConfig(model=args.model, cache_dir=tmp, device=args.device or "auto"))
        study = late_fusion_study(engine, Path(tmp) / "labelled", per_class=args.per_class, n_queries=args.queries,
                                  k=args.k, split=args.split)
    if args.json:
        print(json.dumps(study, indent=2))
        return 0
    acc = study["accuracy"]
    print(f"shape of {study['queries']} single-object {study['split']} scenes; gallery of {study['gallery']} "
          f"labelled val scenes; k={study['k']}")
    print("| alpha (1 = zero-shot only, 0 = neighbours only) | accuracy |\n|---:|---:|")
    for alpha, a in acc.items():
        print(f"| {alpha:.2f} | {100 * a:.1f}% |")
    best = max(acc, key=acc.get)
    verdict = ("beats both parts" if 0 < best < 1 and acc[best] > max(acc[0.0], acc[1.0]) else
               "does not beat the better part alone")
    print(f"best alpha {best:.2f}: the blend {verdict}")
    return 0


def _flags_train_clip(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget (default 10)")
    p.add_argument("--steps", type=int, default=0, help="train exactly this many steps instead")
    p.add_argument("--out", required=True, help="folder for weights, config and MODEL_CARD.md")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aux-weight", type=float, default=1.0, help="initial weight of the grid-probe loss (0: off)")
    p.add_argument("--aux-until", type=float, default=0.8,
                   help="fraction of training over which that weight falls to 0 (> 1: it never reaches 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu",
                   help="where the steps run: cpu (default) or cuda, the same recipe on a GPU (batches are still "
                        "drawn on the CPU)")
    p.add_argument("--pairs", type=int, default=1000, help="held-out pairs for the final evaluation")
    p.add_argument("--zero-shot", type=int, default=500, help="single-object scenes for the final evaluation")
    _cli_world().add_train_flags(p)


def _flags_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mbm-shapes", help="model spec (default mbm-shapes)")
    p.add_argument("--device", default="auto")
    p.add_argument("--pairs", type=int, default=1000, help="held-out image-caption pairs per split")
    p.add_argument("--zero-shot", type=int, default=500, help="single-object scenes per split")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _cli_world().add_eval_flags(p)


def _flags_train_fusion(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", default="all", help="concat, gated, attention, image-only, text-only, or all")
    p.add_argument("--backbone", default="mbm-shapes",
                   help="a ResNet CLIP spec (default mbm-shapes), or seednet: the seed's CNN + GRU from scratch")
    p.add_argument("--minutes", type=float, default=11.0, help="SeedNet's training budget (default 11)")
    p.add_argument("--scenes", type=int, default=6000, help="train scenes; every question of each is used")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-scenes", type=int, default=1000, help="test and held-out scenes for the table")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="folder for the heads (default assets/fusion/BACKBONE)")


def _flags_eval_fusion(p: argparse.ArgumentParser) -> None:
    p.add_argument("--heads", default=None, help="a folder written by train-fusion (default: the shipped heads of "
                                                 "mbm-shapes)")
    p.add_argument("--scenes", type=int, default=1000, help="test and held-out scenes")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--record", action="store_true", help="write the measured table into the heads' heads.json")


def _flags_eval_late_fusion(p: argparse.ArgumentParser) -> None:
    _model_flags(p)
    p.add_argument("--per-class", type=int, default=20, help="labelled gallery images per shape")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("-k", type=int, default=10, help="neighbours that vote")
    p.add_argument("--split", default="heldout", help="where the queries come from (test or heldout)")
    p.add_argument("--json", action="store_true")


def _flags_make_gallery(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="the folder to write")
    p.add_argument("-n", type=int, default=300, help="how many scenes (default 300)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "heldout"),
                   help="which scenes (default test)")
    p.add_argument("--anywhere", action="store_true", help="on any background, size, rotation and drawing style")
    p.add_argument("--emoji", default=None, metavar="STYLE",
                   help="instead of scenes: emoji in STYLE (twemoji, noto, fluent; needs prepare-data), every animal, "
                        "plant, food and drink and -n others")
    p.add_argument("--cache", default=None, help="with --emoji: the cache prepare-data filled")


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model spec (default: $MBM_MODEL or mbm-world)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, mps (default: $MBM_DEVICE or auto)")

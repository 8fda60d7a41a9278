"""Command line: `python -m mbm COMMAND`, one function per command (`python -m mbm --help` lists them: index,
search, describe, classify, models, eval, train-clip, train-fusion, eval-fusion, eval-late-fusion, make-gallery and
the world's data and model commands). The library logs; this module prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def _models(args) -> int:
    from mbm.models import KNOWN_MODELS
    for m in KNOWN_MODELS:
        print(f"{m.spec:32} {'offline' if m.offline else 'download'}  {m.about}")
    return 0


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
                      aux_weight=args.aux_weight, aux_until=args.aux_until)
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


def _prepare_data(args) -> int:
    return _cli_world().prepare_data(args)


def _engine(args, gallery: str | None = None):
    from mbm.engine import Engine, EngineConfig
    config = EngineConfig.from_env(model=args.model, gallery=gallery, cache_dir=args.cache, device=args.device,
                                   index_factory=args.index_factory)
    return Engine(config, progress=_tqdm_progress())


def _tqdm_progress():
    """A `progress(done, total, what)` callback drawing one tqdm bar per stage."""
    from tqdm import tqdm
    bars = {}

    def progress(done: int, total: int, what: str) -> None:
        bar = bars.get(what) or bars.setdefault(what, tqdm(total=total, desc=what, unit="item", leave=False))
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
    return progress


def _index(args) -> int:
    engine = _engine(args, gallery=args.folder)
    gallery = engine.gallery  # opening it syncs it
    report = engine.last_sync
    if args.json:
        print(json.dumps({**{k: v for k, v in report.__dict__.items() if k != "skipped"},
                          "items": len(gallery), "skipped": [dict(path=p, error=e) for p, e in report.skipped],
                          "store": str(gallery.store), "index": repr(gallery.index)}, indent=2))
        return 0
    print(f"{gallery.root}: {len(gallery)} images searchable with {engine.encoder.name}")
    print(report.summary())
    for path, error in report.skipped:
        print(f"  skipped {path}: {error}")
    return 0


def _search(args) -> int:
    engine = _engine(args, gallery=args.gallery)
    if args.more_like is not None:
        hits = engine.more_like(args.more_like, k=args.k, threshold=args.threshold)
    else:
        hits = engine.search(args.query, image=args.image, image_weight=args.image_weight, k=args.k,
                             threshold=args.threshold)
    if args.json:
        print(json.dumps([dict(id=h.id, path=str(h.path), caption=h.caption, score=round(h.score, 6),
                               thumbnail=str(h.thumbnail) if h.thumbnail else None) for h in hits], indent=2))
    for h in hits if not args.json else ():
        print(f"{h.score:7.4f}  #{h.id:<6} {h.path}  {h.caption}")
    return 0 if hits else 1


def _describe(args) -> int:
    engine = _engine(args, gallery=args.gallery)
    ranked = engine.describe(args.image, texts=args.texts, k=args.k)
    if args.json:
        print(json.dumps([dict(text=t, score=round(s, 6)) for t, s in ranked], indent=2))
    for text, score in ranked if not args.json else ():
        print(f"{score:7.4f}  {text}")
    return 0


def _classify(args) -> int:
    import warnings

    from mbm.data.images import load_image
    from mbm.engine import Engine, EngineConfig
    engine = Engine(EngineConfig.from_env(model=args.model, device=args.device))
    labels = [s for part in args.labels for s in part.split(",")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = engine.zero_shot(load_image(args.image), labels, args.templates)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"probs": result.probs, "per_template": result.per_template,
                          "truncated": result.truncated}, indent=2))
        return 0
    for label, p in result.probs.items():
        print(f"{p:7.2%}  {label}")
    return 0


def _make_gallery(args) -> int:
    from mbm.data.sample import write_scenes
    paths = write_scenes(args.out, n=args.n, size=args.size, split=args.split)
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


EXIT_CODES = """exit codes: 0 success; 1 a search found nothing (above the threshold); 2 bad input (a missing file,
an unreadable image, an empty query, a bad flag); 3 the model's weights cannot be loaded (offline, damaged); 4 the
gallery's store cannot be used (damaged, or locked by another program)."""


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model spec (default: $MBM_MODEL or mbm-shapes)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, mps (default: $MBM_DEVICE or auto)")


def _store_flags(p: argparse.ArgumentParser) -> None:
    _model_flags(p)
    p.add_argument("--cache", default=None, help="where gallery stores live (default: $MBM_CACHE or ~/.cache/mbm)")
    p.add_argument("--index-factory", default=None, metavar="FACTORY",
                   help='FAISS factory string, e.g. "HNSW32,Flat" (default: $MBM_INDEX, else exact up to 100k images)')


def _gallery_flags(p: argparse.ArgumentParser) -> None:
    _store_flags(p)
    p.add_argument("--gallery", default=None, help="image folder (default: $MBM_GALLERY or the built-in gallery)")
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _flags_models(p: argparse.ArgumentParser) -> None:
    """`models` takes no flags."""


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


def _flags_prepare_data(p: argparse.ArgumentParser) -> None:
    _cli_world().add_prepare_flags(p)


def _flags_index(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="the folder of images (searched recursively)")
    _store_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a summary")


def _flags_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", nargs="?", default=None, help='text or a query expression (optional with --image)')
    p.add_argument("--image", default=None, help="an image file to search with")
    p.add_argument("--image-weight", type=float, default=1.0, help="weight of --image against the text")
    p.add_argument("--more-like", type=int, default=None, metavar="ID", help="images like gallery item ID")
    p.add_argument("--threshold", type=float, default=None, help="drop results with a lower cosine score")
    _gallery_flags(p)


def _flags_describe(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="an image file")
    p.add_argument("--texts", nargs="+", default=None, help="texts to rank instead of the gallery's captions")
    _gallery_flags(p)


def _flags_classify(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="an image file")
    p.add_argument("--labels", nargs="+", required=True, help="labels, space- or comma-separated")
    p.add_argument("--templates", nargs="+", default=None, help='prompt templates with {} for the label')
    _model_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


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


SEARCH_SYNTAX = ('QUERY may mix terms: 2 x "red circle" + @photo.jpg - 0.5 x blue + #12 (@ an image file, # a gallery '
                 "item id).")
# name: (what it does, the function adding its flags, the function running it, more add_parser settings)
COMMANDS = {
    "models": ("list the models mbm knows by name", _flags_models, _models, {}),
    "train-clip": ("train the embedded CLIP-style model on the shapes world", _flags_train_clip, _train_clip, {}),
    "eval": ("retrieval recall and zero-shot accuracy on the shapes world", _flags_eval, _eval, {}),
    "prepare-data": ("fetch (npm, apt), check and render the emoji concepts of mbm-world", _flags_prepare_data,
                     _prepare_data, {}),
    "index": ("make a folder of images searchable (incremental; safe to interrupt)", _flags_index, _index,
              {"epilog": EXIT_CODES}),
    "search": ("text->image, image->image or a weighted mix, in a gallery", _flags_search, _search,
               {"description": SEARCH_SYNTAX, "epilog": EXIT_CODES}),
    "describe": ("image->text: rank the gallery's captions (or --texts) for an image", _flags_describe, _describe,
                 {"epilog": EXIT_CODES}),
    "classify": ("zero-shot classification of an image among labels", _flags_classify, _classify,
                 {"epilog": EXIT_CODES}),
    "train-fusion": ("train fused image+text heads (Shapes-VQA) over a frozen backbone", _flags_train_fusion,
                     _train_fusion, {}),
    "eval-fusion": ("accuracy of trained fusion heads per strategy, question type, split", _flags_eval_fusion,
                    _eval_fusion, {}),
    "eval-late-fusion": ("zero-shot blended with a k-NN vote of labelled gallery images", _flags_eval_late_fusion,
                         _eval_late_fusion, {}),
    "make-gallery": ("write synthetic scenes with caption sidecars to a folder", _flags_make_gallery, _make_gallery,
                     {}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mbm", description="mbm: a multimodal model demo",
                                     epilog=EXIT_CODES)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress of the library")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (what, flags, run, settings) in COMMANDS.items():
        command = sub.add_parser(name, help=what, **settings)
        flags(command)
        command.set_defaults(run=run)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from mbm.errors import InputError, StoreDamagedError
    from mbm.gallery import GalleryLockedError
    from mbm.models import WeightsFileError, WeightsUnavailableError
    try:
        return args.run(args)
    except (WeightsUnavailableError, WeightsFileError) as e:
        return _fail(e, 3)
    except (StoreDamagedError, GalleryLockedError) as e:
        return _fail(e, 4)
    except (InputError, FileNotFoundError, NotADirectoryError, PermissionError) as e:  # a person's input or path
        return _fail(e, 2)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130


def _fail(error: Exception, status: int) -> int:
    """Print one line for people (unencodable characters of a file name or argument escaped) and return `status`."""
    text = str(error).encode(sys.stderr.encoding or "utf-8", "backslashreplace").decode(sys.stderr.encoding or "utf-8")
    print(f"error: {text}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

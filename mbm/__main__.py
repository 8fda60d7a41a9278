"""Command line: `python -m mbm COMMAND`, one function per command (`python -m mbm --help` lists them: index,
embed, search, describe, classify, models, eval, train-clip, train-fusion, eval-fusion, eval-late-fusion,
make-gallery and the world's data and model commands). The library logs; this module prints."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from mbm._cli_train import (  # the commands that train and measure models
    _cli_world,
    _eval,
    _eval_fusion,
    _eval_late_fusion,
    _flags_eval,
    _flags_eval_fusion,
    _flags_eval_late_fusion,
    _flags_make_gallery,
    _flags_train_clip,
    _flags_train_fusion,
    _make_gallery,
    _model_flags,
    _train_clip,
    _train_fusion,
)


def _models(args) -> int:
    from mbm.models import KNOWN_MODELS
    for m in KNOWN_MODELS:
        print(f"{m.spec:32} {'offline' if m.offline else 'download'}  {m.about}")
    return 0


def _prepare_data(args) -> int:
    return _cli_world().prepare_data(args)


def _config(args, gallery: str | None = None):
    from mbm.config import EngineConfig  # no torch: a query may be answered without it (mbm._cli_query)
    return EngineConfig.from_env(model=args.model, gallery=gallery, cache_dir=args.cache, device=args.device,
                                 index_factory=args.index_factory)


def _engine(args, gallery: str | None = None, config=None):
    """The engine for a command, with a tqdm bar per stage; `config` when the caller built it already."""
    from mbm.engine import Engine
    return Engine(config or _config(args, gallery), progress=_tqdm_progress())


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
    if args.from_shards:  # the shards of `embed`: imported, the folder is not read
        from mbm._cli_scale import index_from_shards
        return index_from_shards(args, _tqdm_progress())
    if args.folder is None:
        from mbm.errors import InputError
        raise InputError("name the folder to index, or --from-shards SHARDS")
    from mbm._cli_query import quick_index
    config = _config(args, args.folder)
    quick = quick_index(args, config, _tqdm_progress())  # without torch, when it can
    if quick:
        (gallery, report), name = quick, quick[0].encoder.name
    else:
        engine = _engine(args, config=config)
        gallery, report, name = engine.gallery, engine.last_sync, engine.encoder.name  # opening it syncs it
    shipped = gallery.write_shipped_vectors() if args.ship_vectors else None
    if args.json:
        print(json.dumps({**{k: v for k, v in report.__dict__.items() if k != "skipped"},
                          "items": len(gallery), "skipped": [dict(path=p, error=e) for p, e in report.skipped],
                          "store": str(gallery.store), "index": repr(gallery.index)}, indent=2))
        return 0
    print(f"{gallery.root}: {len(gallery)} images searchable with {name}")
    print(report.summary())
    for path, error in report.skipped:
        print(f"  skipped {path}: {error}")
    if shipped:
        print(f"vectors for {gallery.encoder.key} written to {shipped}")
    return 0


def _embed(args) -> int:
    from mbm._cli_scale import embed
    return embed(args, _tqdm_progress())


def _search(args) -> int:
    from mbm._cli_query import quick_search
    # without torch when it can (MBM_BACKEND=onnx, a text query, a gallery in sync); else the full engine
    hits = quick_search(args, _config(args, args.gallery))
    if hits is None:
        engine = _engine(args, gallery=args.gallery)
        if args.more_like is not None:
            hits = engine.more_like(args.more_like, k=args.k, threshold=args.threshold)
        else:
            hits = engine.search(args.query, image=args.image, image_weight=args.image_weight, k=args.k,
                                 threshold=args.threshold)
    if args.json:
        print(json.dumps([dict(id=h.id, path=str(h.path), caption=h.caption, score=round(h.score, 6),
                               thumbnail=str(h.thumbnail) if h.thumbnail else None, start=h.start, end=h.end)
                          for h in hits], indent=2))  # start, end: a video moment's seconds (None for an image)
    for h in hits if not args.json else ():
        print(f"{h.score:7.4f}  #{h.id:<6} {h.path}{'@' + h.span if h.span else ''}  {h.caption}")
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


EXIT_CODES = """exit codes: 0 success; 1 a search found nothing (above the threshold); 2 bad input (a missing file,
an unreadable image, an empty query, a bad flag); 3 the model's weights cannot be loaded (offline, damaged); 4 the
gallery's store cannot be used (damaged, or locked by another program)."""


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


def _flags_prepare_data(p: argparse.ArgumentParser) -> None:
    _cli_world().add_prepare_flags(p)


def _flags_index(p: argparse.ArgumentParser) -> None:
    from mbm._cli_scale import flags_from_shards
    p.add_argument("folder", nargs="?", default=None, help="the folder of images (searched recursively)")
    _store_flags(p)
    flags_from_shards(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    p.add_argument("--ship-vectors", action="store_true",
                   help="also write FOLDER/.vectors/<model>.npz, so a copy of the folder indexes without the model")


def _flags_embed(p: argparse.ArgumentParser) -> None:
    from mbm._cli_scale import flags_embed
    flags_embed(p)


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
    "embed": ("embed images into shards on a Dask cluster (local, or --cluster); then index --from-shards",
              _flags_embed, _embed, {"epilog": EXIT_CODES}),
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
    global _ran
    _ran = args.command
    if args.command in BATCH_COMMANDS:  # before torch is imported: libgomp reads it once, as it loads
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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


# Commands that encode images in batches: torch's OpenMP threads wait passively there instead of spinning, leaving
# the CPU to decoding threads and other programs (with either beside it, 1.3-1.4x the images/s for 0.7x the CPU;
# idle and alone, at most 3% slower: docs/BENCHMARKS.md, "Threads that wait"). A query process keeps the spinning
# default: idle, ONNX Runtime answers a batch-1 query sooner spinning.
BATCH_COMMANDS = frozenset({"index", "embed"})

# Commands whose work is all committed (SQLite transactions, files renamed into place) when `main` returns: their
# process may skip Python's teardown of torch's modules, which takes about 1 s here (a third of indexing 240 photos
# with the embedded model). Not training or `embed`, whose threads and Dask cluster close through atexit.
FAST_EXIT = frozenset({"index", "search", "describe", "classify", "models"})
_ran: str | None = None  # the command `main` parsed last


def _exit(status: int) -> None:
    """Exit with `status`; after a `FAST_EXIT` command that loaded torch, without the interpreter's teardown."""
    if "torch" not in sys.modules or _ran not in FAST_EXIT:
        sys.exit(status)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    _exit(main())

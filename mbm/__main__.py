"""Command line: `python -m mbm {models,train-clip,eval}`. The library logs; this module prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _models(args) -> int:
    from mbm.models import KNOWN_MODELS
    for m in KNOWN_MODELS:
        print(f"{m.spec:32} {'offline' if m.offline else 'download'}  {m.about}")
    return 0


def _train_clip(args) -> int:
    import torch
    from tqdm import tqdm

    from mbm.evaluate import evaluate
    from mbm.models import create_model
    from mbm.train.card import metrics_table, write_card
    from mbm.train.clip import TrainConfig, save, train
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(minutes=args.minutes, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      aux_weight=args.aux_weight, aux_until=args.aux_until)
    total = args.steps or 1000
    with tqdm(total=total, unit="%" if not args.steps else "step", desc="train-clip") as bar:
        def on_step(step: int, progress: float, loss: float) -> None:
            bar.n = step if args.steps else round(progress * total)
            bar.set_postfix(loss=f"{loss:.3f}", step=step, refresh=False)
            bar.refresh()
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
    from mbm.evaluate import evaluate
    from mbm.models import create_model
    from mbm.train.card import metrics_table
    encoder = create_model(args.model, device=args.device)
    metrics = evaluate(encoder, n_pairs=args.pairs, n_zero_shot=args.zero_shot)
    print(json.dumps(metrics, indent=2) if args.json else metrics_table(metrics))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mbm", description="mbm: a multimodal model demo")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress of the library")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the models mbm knows by name").set_defaults(run=_models)

    p = sub.add_parser("train-clip", help="train the embedded CLIP-style model on the shapes world")
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
    p.set_defaults(run=_train_clip)

    p = sub.add_parser("eval", help="retrieval recall and zero-shot accuracy on the shapes world")
    p.add_argument("--model", default="mbm-shapes", help="model spec (default mbm-shapes)")
    p.add_argument("--device", default="auto")
    p.add_argument("--pairs", type=int, default=1000, help="held-out image-caption pairs per split")
    p.add_argument("--zero-shot", type=int, default=500, help="single-object scenes per split")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_eval)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

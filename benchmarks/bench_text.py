"""Text embedding as queries and captions cost it: padded to the context length vs cut to the text's length, and a
query on one CPU thread vs two, on an idle machine and beside busy processes (issue 19).

    python benchmarks/bench_text.py                        # mbm-shapes and a random ViT-B-32-256; idle, then 2 busy
    python benchmarks/bench_text.py --models ViT-B-32-256 --load 0,2,4 --repeats 41

For each model and load (`--load N`: N processes spinning on the CPU beside the benchmark, as other programs or
visitors would be), in one process:
- a query: `encode_texts(["a red circle"])` as the page runs it, p50 over `--repeats`, four ways: the old path
  (ids padded to the context length, torch's thread count), padded on one thread, cut on all threads, and the
  path mbm takes now (cut, one thread: `Encoder.encode_texts`);
- captions: 1,024 file-name captions as `mbm index` embeds them for a folder of photos (`IMG_1234`, words of
  file names), padded in batches of `text_batch` vs sorted by length and cut (`Encoder.encode_texts`), s per run.
Ratios are old / new, measured in the same round. The random ViT-B-32-256 needs no download (its weights do not
matter for time).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mbm.models import Encoder, create_model  # noqa: E402


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _encoder(spec: str) -> Encoder:
    if spec.startswith("mbm"):
        return create_model(spec, device="cpu")
    import open_clip
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(spec)
    return Encoder(model, preprocess, open_clip.get_tokenizer(spec), spec, torch.device("cpu"))


def _old(enc: Encoder, texts: list[str], threads: int) -> None:
    """The path before issue 19: every batch padded to the context length, on `threads` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), enc.text_batch):
                F.normalize(enc.model.encode_text(enc.tokenizer(texts[start:start + enc.text_batch])), dim=-1)
    finally:
        torch.set_num_threads(before)


def _cut_all_threads(enc: Encoder, texts: list[str]) -> None:
    from mbm.models.encoder import causal_text, cut_tokens
    with torch.inference_mode():
        causal_text(enc.model, cut_tokens(enc.tokenizer(texts)))


def _p50(fn, repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _captions(n: int) -> list[str]:
    rng = random.Random(0)
    words = ["holiday", "beach", "birthday", "garden", "party", "mountain", "school", "trip", "family", "dog"]
    return [rng.choice([f"IMG {rng.randrange(10_000):04d}", f"DSC {rng.randrange(100_000):05d}",
                        " ".join(rng.sample(words, rng.randint(1, 3))) + f" {rng.randrange(100)}"])
            for _ in range(n)]


def measure(enc: Encoder, repeats: int) -> dict[str, float]:
    threads, q = torch.get_num_threads(), ["a red circle"]
    row = {"query old (padded, all threads) ms": _p50(lambda: _old(enc, q, threads), repeats),
           "query padded, 1 thread ms": _p50(lambda: _old(enc, q, 1), repeats),
           "query cut, all threads ms": _p50(lambda: _cut_all_threads(enc, q), repeats),
           "query mbm (cut, 1 thread) ms": _p50(lambda: enc.encode_texts(q), repeats)}
    row = {k: v * 1000 for k, v in row.items()}
    caps = _captions(1024)
    row["captions old s"] = _p50(lambda: _old(enc, caps, threads), 3)
    row["captions mbm s"] = _p50(lambda: enc.encode_texts(caps), 3)
    row["query old / mbm"] = row["query old (padded, all threads) ms"] / row["query mbm (cut, 1 thread) ms"]
    row["captions old / mbm"] = row["captions old s"] / row["captions mbm s"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mbm-shapes,ViT-B-32-256")
    ap.add_argument("--load", default="0,2", help="busy processes beside the benchmark, one round each")
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for spec in args.models.split(","):
        enc = _encoder(spec)
        for load in (int(n) for n in args.load.split(",")):
            stop = mp.Event()
            spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(load)]
            for p in spinners:
                p.start()
            try:
                row = measure(enc, args.repeats)
            finally:
                stop.set()
                for p in spinners:
                    p.join(timeout=10)
            print(f"\n{spec}, {load} busy processes:")
            for k, v in row.items():
                print(f"  {k:40} {v:9.2f}")


if __name__ == "__main__":
    main()

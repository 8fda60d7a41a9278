"""Embedding on a Dask cluster: what `python -m mbm embed SOURCE --out SHARDS/` runs.

The client plans the shards (`mbm.shards`), skips those already on disk, and submits one task per remaining
shard. Each worker loads the model once, in a `WorkerPlugin` (Dask runs it again on a worker that replaces a
dead one); a task reads, hashes and decodes its images with the helpers the gallery's sync uses, encodes them in
one batch with the `Encoder`, and writes its shard atomically. Scheduling, retrying the tasks of a lost worker
and the cluster itself are Dask's; mbm writes none of that. Without a cluster address, `connect` starts a
`LocalCluster` of worker processes listening on 127.0.0.1 only. The folder and `--out` must be at the same path
on every worker (a shared file system).

Importing this module needs `dask[distributed]` and `pyarrow`; the ImportError says what to install.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mbm.errors import InputError
from mbm.shards import INSTALL, SHARD_SIZE, Chunk, Entry, Manifest, plan, read_source, write_shard

try:
    from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker
except ImportError as e:  # the demo does not need Dask; only this command does
    raise ImportError(f"`python -m mbm embed` runs on Dask: {INSTALL}") from e

log = logging.getLogger(__name__)
PLUGIN = "mbm-encoder"  # the name the plugin is registered under on every worker


@dataclass
class EmbedReport:
    """What one `embed` run did."""
    images: int = 0  # entries in the source
    shards: int = 0  # shards of the whole source
    written: int = 0  # shards written by this run
    skipped: int = 0  # shards already on disk before this run
    encoded: int = 0  # images in the shards this run wrote
    unreadable: int = 0  # of those, files that could not be decoded (kept in the shard with their error)
    missing: list[str] = field(default_factory=list)  # listed paths that do not exist
    seconds: float = 0.0  # the whole run, the model's loading on the workers included
    load_seconds: float = 0.0  # of which: until every worker had the model

    def summary(self) -> str:
        busy = self.seconds - self.load_seconds
        rate = f" ({self.encoded / busy:.1f} images/s once loaded)" if busy > 0 and self.encoded else ""
        return (f"{self.images} images in {self.shards} shards: {self.written} written, {self.skipped} already there; "
                f"{self.encoded} images encoded{rate}, {self.unreadable} unreadable, {len(self.missing)} listed "
                f"but missing, in {self.seconds:.1f} s ({self.load_seconds:.1f} s loading the model)")


class EncoderPlugin(WorkerPlugin):
    """Loads the model once per worker process; tasks take it with `_encoder()`.

    Args:
        spec, device, precision: as for `mbm.models.create_model`.
        threads: torch threads and decoders per worker (None: the worker's own thread count; Dask starts worker
            processes with OMP_NUM_THREADS=1, so torch needs to be told).
    """

    def __init__(self, spec: str, device: str = "auto", precision: str = "auto", threads: int | None = None):
        self.spec, self.device, self.precision, self.threads = spec, device, precision, threads
        self.asked = threads  # `threads` becomes the worker's own count in setup when None
        self.encoder = None
        self.lock = threading.Lock()  # one encoder call at a time when a worker runs several tasks

    def __getstate__(self):  # what travels to the workers: the settings, never a loaded model or a lock
        return dict(spec=self.spec, device=self.device, precision=self.precision, threads=self.threads)

    def __setstate__(self, state):
        self.__init__(**state)

    def setup(self, worker) -> None:
        import torch

        from mbm.models import create_model
        self.threads = self.threads or worker.state.nthreads
        torch.set_num_threads(self.threads)
        self.encoder = create_model(self.spec, self.device, self.precision)
        log.info("worker %s loaded %r on %d threads", worker.address, self.encoder, self.threads)


def _plugin() -> EncoderPlugin:
    return get_worker().plugins[PLUGIN]


def _worker_model(dask_worker) -> tuple | None:
    """On a worker (`Client.run` passes it): the plugin's settings and its model's key and width, or None."""
    plugin = dask_worker.plugins.get(PLUGIN)
    if plugin is None or plugin.encoder is None:
        return None
    return (plugin.spec, plugin.device, plugin.precision, plugin.asked), (plugin.encoder.key, plugin.encoder.embed_dim)


def embed_chunk(chunk: Chunk, root: str, out: str, model_key: str) -> tuple[int, int, bool]:
    """On a worker: decode, encode and write one shard, unless it is already there.

    Returns:
        `(images, unreadable, written)`.
    """
    target = Path(out) / chunk.name
    if target.is_file():  # a duplicated or retried task whose twin finished first
        return len(chunk.entries), 0, False
    plugin = _plugin()
    encoder = plugin.encoder
    if encoder.key != model_key:
        raise RuntimeError(f"worker {get_worker().address} has {encoder.key}, the run expects {model_key}")
    with ThreadPoolExecutor(plugin.threads, thread_name_prefix="mbm-decode") as pool:
        rows = list(pool.map(lambda e: _decode(Path(root), e, encoder), chunk.entries))
    good = [i for i, r in enumerate(rows) if r["error"] is None]
    images = np.zeros((len(rows), encoder.embed_dim), np.float32)
    captions = np.zeros_like(images)
    if good:
        import torch
        with plugin.lock:
            images[good] = encoder.encode_pixels(torch.stack([rows[i].pop("pixels") for i in good]))  # (B, D)
            captions[good] = encoder.encode_texts([rows[i]["caption"] for i in good])
    write_shard(target, rows, images, captions)
    return len(rows), len(rows) - len(good), True


def _decode(root: Path, entry: Entry, encoder) -> dict:
    """One file as the gallery's sync reads it: bytes hashed, decoded at draft scale, the model's input taken
    from the 256 px thumbnail when that is big enough (so the vectors match `python -m mbm index`)."""
    from mbm.data.images import ImageError, caption_from_filename, read_sidecar_caption
    from mbm.sync import decode_for_model, read_error
    path = root / entry.path
    row = dict(path=entry.path, size=entry.size, mtime_ns=entry.mtime_ns, sha256=None, width=None, height=None,
               caption=read_sidecar_caption(path) or caption_from_filename(path), error=None)
    try:
        data = path.read_bytes()
        _, source, (row["width"], row["height"]) = decode_for_model(data, entry.path, encoder)
        row["sha256"] = hashlib.sha256(data).hexdigest()
        row["pixels"] = encoder.prepare(source)  # (3, H, W)
    except (ImageError, OSError) as e:
        row["error"] = read_error(entry.path, e)
    return row


def load_model(client: Client, spec: str, device: str = "auto", precision: str = "auto",
               threads: int | None = None, timeout: float | None = None) -> tuple[str, int]:
    """Register the model's plugin on every worker (now and later ones), unless every worker has loaded it with
    these settings already; the key and width they all loaded."""
    client.wait_for_workers(1, timeout=timeout)
    loaded = client.run(_worker_model).values()
    if any(v is None or v[0] != (spec, device, precision, threads) for v in loaded):
        client.register_plugin(EncoderPlugin(spec, device, precision, threads), name=PLUGIN)
        loaded = client.run(_worker_model).values()
    models = {v[1] for v in loaded}
    if len(models) != 1:
        raise RuntimeError(f"the workers loaded different weights for {spec}: {sorted(models)}")
    return models.pop()


def embed(source: str | os.PathLike, out: str | os.PathLike, client: Client, spec: str, *, device: str = "auto",
          precision: str = "auto", shard_size: int = SHARD_SIZE, threads: int | None = None,
          progress: Callable[[int, int, str], None] | None = None, timeout: float | None = None) -> EmbedReport:
    """Embed every image of `source` into shards under `out`, skipping shards already there.

    Args:
        source: a folder, a file list, or a parquet/CSV table of paths (see `mbm.shards.read_source`).
        out: the shards' folder (created); a finished run writes `out/manifest.json`.
        client: a connected Dask client (see `connect`).
        spec: the model spec the workers load.
        shard_size: images per shard on average.
        threads: torch threads and decoders per worker (see `EncoderPlugin`).
        progress: `progress(done, total, "embedding shards")` as shards finish, on the client.
        timeout: seconds to wait for workers and for the whole run (None: no limit).
    """
    start = time.perf_counter()
    root, entries, missing = read_source(source)
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    before = time.perf_counter()
    key, dim = load_model(client, spec, device, precision, threads, timeout)
    loaded = time.perf_counter() - before
    chunks = plan(root, entries, key, shard_size)
    todo = [c for c in chunks if not (out / c.name).is_file()]
    report = EmbedReport(images=len(entries), shards=len(chunks), skipped=len(chunks) - len(todo), missing=missing,
                         load_seconds=loaded)
    futures = client.map(embed_chunk, todo, root=str(root), out=str(out), model_key=key,
                         key=[f"mbm-shard-{c.name.split('.')[0]}" for c in todo])
    for done, future in enumerate(as_completed(futures, timeout=timeout), 1):
        images, unreadable, written = future.result()
        report.written += written
        report.encoded += images if written else 0
        report.unreadable += unreadable if written else 0
        if progress:
            progress(done, len(todo), "embedding shards")
    Manifest(str(root), spec, key, dim, len(entries), [c.name for c in chunks]).write(out)
    for chunk in todo:  # temp files of tasks that died with their worker
        for tmp in out.glob(f".{chunk.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    report.seconds = time.perf_counter() - start
    log.info("embedded %s into %s: %s", root, out, report.summary())
    return report


@contextlib.contextmanager
def connect(address: str | None = None, workers: int = 1, timeout: float = 60) -> Iterator[tuple[Client, int | None]]:
    """A client of the cluster at `address`, or of a new `LocalCluster` of `workers` processes on 127.0.0.1.

    Yields:
        `(client, threads)`: the torch threads each worker should use (the cores shared out for a local
        cluster; None for a cluster someone else sized).
    """
    if address:
        try:
            client = Client(address, timeout=timeout)
        except OSError as e:  # refused, timed out, no such host
            raise InputError(f"cannot reach a Dask scheduler at {address} ({e}); start one (`dask scheduler`, "
                             "dask-jobqueue, Kubernetes) or leave --cluster out for a local cluster") from e
        with client:
            yield client, None
        return
    if workers <= 0:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster, timeout=timeout) as client:
        yield client, max(1, (os.cpu_count() or 1) // workers)

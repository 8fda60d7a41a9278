"""mbm's entry point: `python app.py` locally, and the Hugging Face Space's `app_file`.

Settings: flags, else `MBM_*` environment variables (see `mbm.engine.EngineConfig`); host and port
also follow Gradio's own `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT`, which Spaces set.

Start-up, on the embedded model: importing Gradio, then PyTorch and open_clip, is most of it; the log line
"page served in ..." says where the seconds went (`benchmarks/bench_page.py` reads it).
"""

from __future__ import annotations

import time

START = time.perf_counter()  # before the heavy imports, so the start-up log line counts them

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

LOOPBACK = {None, "127.0.0.1", "localhost", "::1"}
log = logging.getLogger("mbm")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mbm: a multimodal model demo")
    parser.add_argument("--model", default=None, help="model spec (default: $MBM_MODEL, a cached open_clip model, "
                                                      "or mbm-shapes)")
    parser.add_argument("--gallery", default=None, help="image folder to serve (default: $MBM_GALLERY or built-in)")
    parser.add_argument("--host", default=os.environ.get("MBM_HOST"), help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MBM_PORT", 0)) or None,
                        help="port (default 7860, or the next free one)")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio link")
    parser.add_argument("--queue-size", type=int, default=int(os.environ.get("MBM_QUEUE_SIZE", 64)),
                        help="requests that may wait; past it visitors are told the app is busy (default 64)")
    parser.add_argument("--max-upload-mb", type=float, default=float(os.environ.get("MBM_MAX_UPLOAD_MB", 100)),
                        help="largest file a visitor may upload, in MB (default 100)")
    parser.add_argument("--session-hours", type=float, default=float(os.environ.get("MBM_SESSION_HOURS", 24)),
                        help="a visitor's uploads untouched this long are deleted, even if the page stayed open "
                             "(default 24)")
    args = parser.parse_args(argv)  # before the heavy imports: `--help` and a bad flag answer at once
    if args.queue_size < 1 or args.max_upload_mb <= 0 or args.session_hours <= 0:
        parser.error("--queue-size, --max-upload-mb and --session-hours must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    marks = [("python", START)]
    from demo import build_demo  # Gradio, then mbm and PyTorch (the page's modules import the engine's)
    from mbm.engine import Engine, EngineConfig
    from mbm.gallery import GalleryLockedError
    from mbm.models import WeightsUnavailableError
    from mbm.sessions import sweep_periodically, sweep_sessions
    marks.append(("imports", time.perf_counter()))
    try:
        engine = Engine(EngineConfig.from_env(model=args.model, gallery=args.gallery))  # open_clip, the weights
        marks.append(("model", time.perf_counter()))
        log.info("gallery ready: %s", engine.gallery)
    except (ValueError, OSError, WeightsUnavailableError, GalleryLockedError) as e:  # a bad --model or --gallery,
        sys.exit(f"error: {e}")  # damaged weights (the message names the file): a line for people, no traceback
    marks.append(("gallery", time.perf_counter()))
    swept = sweep_sessions(engine.config.cache_path(), max_age_s=0)  # sessions of an earlier process are orphans
    ttl = args.session_hours * 3600  # and sessions of this one whose end never came, every hour or sooner
    sweep_periodically(engine.config.cache_path(), ttl, every_s=min(3600.0, ttl / 4),
                       before_remove=lambda folder: engine.close_gallery(folder / "images"))
    log.info("%d stale session folders removed", swept)
    local = args.host in LOOPBACK and not args.share and not engine.config.on_space
    demo = build_demo(engine, local=local)
    demo.queue(default_concurrency_limit=2, max_size=args.queue_size)
    marks.append(("page", time.perf_counter()))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
                max_file_size=int(args.max_upload_mb * 1e6))
    marks.append(("server", time.perf_counter()))
    log.info("page served in %.2f s since app.py started (%s; CPU time %.2f s)", marks[-1][1] - START,
             ", ".join(f"{name} {t - marks[i][1]:.2f} s" for i, (name, t) in enumerate(marks[1:])),
             time.process_time())
    if not getattr(sys, "ps1", sys.flags.interactive):  # as launch() itself: a script keeps serving, a REPL goes on
        demo.block_thread()


if __name__ == "__main__":
    main()

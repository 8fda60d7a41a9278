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
import atexit  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402

LOOPBACK = {None, "127.0.0.1", "localhost", "::1"}
log = logging.getLogger("mbm")


def parse_flags(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, each defaulting to its `MBM_*` variable; read before the heavy imports, so `--help` and a bad flag
    answer at once."""
    parser = argparse.ArgumentParser(description="mbm: a multimodal model demo")
    parser.add_argument("--model", default=None, help="model spec (default: $MBM_MODEL, a cached open_clip model, "
                                                      "or mbm-world)")
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
    parser.add_argument("--session-idle-minutes", type=float,
                        default=float(os.environ.get("MBM_SESSION_IDLE_MINUTES", 60)),
                        help="uploads untouched this long are deleted when no page of their session is open, e.g. a "
                             "script's (default 60)")
    parser.add_argument("--session-quota-mb", type=float, default=float(os.environ.get("MBM_SESSION_QUOTA_MB", 1024)),
                        help="what one visitor's uploads may hold in all, in MB (default 1024)")
    parser.add_argument("--session-max-files", type=int, default=int(os.environ.get("MBM_SESSION_MAX_FILES", 2000)),
                        help="files one visitor's uploads may hold in all (default 2000)")
    parser.add_argument("--max-request-kb", type=float, default=float(os.environ.get("MBM_MAX_REQUEST_KB", 1024)),
                        help="largest request body other than an upload, in KB (default 1024)")
    args = parser.parse_args(argv)
    numbers = ("queue_size", "max_upload_mb", "session_hours", "session_idle_minutes", "session_quota_mb",
               "session_max_files", "max_request_kb")
    if not all(getattr(args, name) > 0 for name in numbers):
        parser.error(", ".join("--" + name.replace("_", "-") for name in numbers) + " must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_flags(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    marks = [("python", START)]
    from starlette.middleware import Middleware

    from demo import build_demo  # Gradio, then mbm and PyTorch (the page's modules import the engine's)
    from demo.server import LimitBody, OpenPages, share_queue_fairly
    from mbm.engine import Engine, EngineConfig
    from mbm.errors import InputError, StoreDamagedError
    from mbm.gallery import GalleryLockedError
    from mbm.models import WeightsFileError, WeightsUnavailableError
    from mbm.uploads import Quota
    marks.append(("imports", time.perf_counter()))
    try:
        engine = Engine(EngineConfig.from_env(model=args.model, gallery=args.gallery))  # open_clip, the weights
        marks.append(("model", time.perf_counter()))
        log.info("gallery ready: %s", engine.gallery)
    except (InputError, OSError, WeightsUnavailableError, WeightsFileError, GalleryLockedError,
            StoreDamagedError) as e:  # a bad --model or --gallery, damaged weights or store (the message names the
        sys.exit(f"error: {e}")  # file): a line for people, no traceback
    marks.append(("gallery", time.perf_counter()))
    pages = Counter()  # open heartbeat connections per session, counted by OpenPages
    sessions = start_sessions(engine, args, pages)
    local = args.host in LOOPBACK and not args.share and not engine.config.on_space
    quota = Quota(max_bytes=int(args.session_quota_mb * 2**20), max_files=args.session_max_files)
    demo = build_demo(engine, local=local, sessions=sessions, quota=quota)
    demo.queue(default_concurrency_limit=2, max_size=args.queue_size, api_open=local)  # public: only the queue
    share_queue_fairly(demo)
    marks.append(("page", time.perf_counter()))
    middleware = [Middleware(LimitBody, max_bytes=int(args.max_request_kb * 1024)), Middleware(OpenPages, pages=pages)]
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
                max_file_size=int(args.max_upload_mb * 1e6), app_kwargs={"middleware": middleware})
    marks.append(("server", time.perf_counter()))
    log.info("page served in %.2f s since app.py started (%s; CPU time %.2f s)", marks[-1][1] - START,
             ", ".join(f"{name} {t - marks[i][1]:.2f} s" for i, (name, t) in enumerate(marks[1:])),
             time.process_time())
    atexit.register(sessions.close)  # visitors' uploads do not outlive the process that took them
    if not getattr(sys, "ps1", sys.flags.interactive):  # as launch() itself: a script keeps serving, a REPL goes on
        demo.block_thread()


def start_sessions(engine, args: argparse.Namespace, pages: Counter):
    """This process's `SessionSpace`: the spaces of processes that are gone are removed now, and its own sessions
    are swept from now on (idle without an open page, or past --session-hours)."""
    from demo.server import is_open
    from mbm.sessions import SessionSpace, sweep_periodically
    sessions = SessionSpace(engine.config.cache_path())  # this process's; other processes' living ones are theirs
    close = lambda folder: engine.close_gallery(folder / "images")
    log.info("%d stale session folders removed", sessions.sweep_orphans(before_remove=close))
    ttl, idle = args.session_hours * 3600, args.session_idle_minutes * 60
    sweep_periodically(lambda: sessions.sweep(idle, ttl, lambda session: is_open(pages, session), close),
                       every_s=min(3600.0, ttl / 4, idle / 2))
    return sessions


if __name__ == "__main__":
    main()

"""mbm's entry point: `python app.py` locally, and the Hugging Face Space's `app_file`.

Settings: flags, else `MBM_*` environment variables (see `mbm.engine.EngineConfig`); host and port
also follow Gradio's own `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT`, which Spaces set.
"""

from __future__ import annotations

import argparse
import logging
import os

from demo import build_demo
from mbm.engine import Engine, EngineConfig
from mbm.sessions import sweep_sessions

LOOPBACK = {None, "127.0.0.1", "localhost", "::1"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mbm: a multimodal model demo")
    parser.add_argument("--model", default=None, help="model spec (default: $MBM_MODEL, a cached open_clip model, "
                                                      "or mbm-shapes)")
    parser.add_argument("--gallery", default=None, help="image folder to serve (default: $MBM_GALLERY or built-in)")
    parser.add_argument("--host", default=os.environ.get("MBM_HOST"), help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MBM_PORT", 0)) or None,
                        help="port (default 7860, or the next free one)")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio link")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mbm").setLevel(logging.INFO)
    engine = Engine(EngineConfig.from_env(model=args.model, gallery=args.gallery))
    swept = sweep_sessions(engine.config.cache_path(), max_age_s=0)  # sessions of an earlier process are orphans
    logging.getLogger("mbm").info("gallery ready: %s; %d stale session folders removed", engine.gallery, swept)
    local = args.host in LOOPBACK and not args.share and not engine.config.on_space
    demo = build_demo(engine, allow_folders=local)
    demo.queue(default_concurrency_limit=2, max_size=64).launch(server_name=args.host, server_port=args.port,
                                                                share=args.share)


if __name__ == "__main__":
    main()

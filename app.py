"""mbm's entry point: `python app.py` locally, and the Hugging Face Space's `app_file`."""

from __future__ import annotations

import argparse
import logging
import os

from demo import build_demo
from mbm.engine import Engine, EngineConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mbm: a multimodal model demo")
    parser.add_argument("--model", default=None, help="model spec (default: $MBM_MODEL or mbm-shapes)")
    parser.add_argument("--gallery", default=None, help="image folder to serve (default: $MBM_GALLERY or built-in)")
    parser.add_argument("--host", default=os.environ.get("MBM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MBM_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio link")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    engine = Engine(EngineConfig.from_env(model=args.model, gallery=args.gallery))
    logging.getLogger("mbm").info("gallery ready: %s", engine.gallery)  # first start indexes it; later ones reuse
    demo = build_demo(engine)
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()

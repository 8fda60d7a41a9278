"""mbm's entry point: `python app.py` locally, and the Hugging Face Space's `app_file`."""

from __future__ import annotations

import argparse
import os

from demo import build_demo
from mbm.models import create_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mbm: a multimodal model demo")
    parser.add_argument("--model", default=os.environ.get("MBM_MODEL", "mbm-shapes"), help="model spec")
    parser.add_argument("--host", default=os.environ.get("MBM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MBM_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio link")
    args = parser.parse_args(argv)
    demo = build_demo(create_model(args.model))
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()

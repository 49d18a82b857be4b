"""The ``streamgen`` command line. Errors print one line on stderr and exit non-zero, no traceback."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import StreamgenError


def load_config(path: str | None, overrides: Sequence[str]) -> dict[str, Any]:
    """A JSON config file with dotted ``key.sub=value`` overrides (values parsed as JSON if they can be)."""
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise StreamgenError(f"`--config` must be an existing JSON file, but got {path!r}")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise StreamgenError(f"`--config` {path!r} is not valid JSON: {exc}") from None
    for item in overrides:
        if "=" not in item:
            raise StreamgenError(f"override must look like key.sub=value, but got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise StreamgenError(f"override {item!r}: `{part}` is not a section")
        node[parts[-1]] = value
    return data


def cmd_train_codec(args: argparse.Namespace) -> int:
    from .config import parse
    from .train_codec import CodecTrainConfig, train_codec

    cfg = parse(CodecTrainConfig, load_config(args.config, args.set))
    out = train_codec(cfg, log=lambda m: print(m, file=sys.stderr))
    print(out)
    return 0


def cmd_train_model(args: argparse.Namespace) -> int:
    from .config import parse
    from .train_model import ModelTrainConfig, train_model

    cfg = parse(ModelTrainConfig, load_config(args.config, args.set))
    print(train_model(cfg, log=lambda m: print(m, file=sys.stderr)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="streamgen", description="endless image and video generation")
    sub = ap.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a codec or a model").add_subparsers(dest="what", required=True)
    tc = train.add_parser("codec", help="train the VQGAN and its pixel-guided decoder")
    tc.add_argument("--config", help="JSON config (see configs/codec.json)")
    tc.add_argument("set", nargs="*", help="dotted overrides, e.g. steps=100 data.crop=32")
    tc.set_defaults(func=cmd_train_codec)
    tm = train.add_parser("model", help="train the vision decoder (Algorithm 1, patch loss); "
                          "run under torchrun for several processes")
    tm.add_argument("--config", help="JSON config (see configs/model.json)")
    tm.add_argument("set", nargs="*", help="dotted overrides, e.g. steps=100 batch=8")
    tm.set_defaults(func=cmd_train_model)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except StreamgenError as exc:
        print(f"streamgen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streamgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

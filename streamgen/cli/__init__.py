"""The ``streamgen`` command line. Errors print one line on stderr and exit non-zero, no traceback."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from streamgen.errors import ConfigError, StreamgenError, bad


def load_config(path: str | None, overrides: Sequence[str],
                base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON config file with dotted ``key.sub=value`` overrides (values parsed as JSON if they can be)."""
    data: dict[str, Any] = dict(base or {})
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"`--config` must be an existing JSON file, but got {path!r}")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"`--config` {path!r} is not valid JSON: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"`--config` must be a JSON file (UTF-8 text), but {path!r} is not text") from None
        except OSError as exc:
            raise ConfigError(f"`--config` must be a readable JSON file, but {path!r} cannot be read "
                              f"({exc.strerror})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"`--config` {path!r} must hold a JSON object of settings, but holds a "
                              f"{type(data).__name__}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override must look like key.sub=value, but got {item!r}")
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
                raise ConfigError(f"override {item!r}: `{part}` is not a section")
        node[parts[-1]] = value
    return data


def cmd_train_codec(args: argparse.Namespace) -> int:
    from streamgen.config import parse
    from streamgen.training.codec import CodecTrainConfig, train_codec

    cfg = parse(CodecTrainConfig, load_config(args.config, args.set))
    out = train_codec(cfg, log=lambda m: print(m, file=sys.stderr))
    print(out)
    return 0


def cmd_train_model(args: argparse.Namespace) -> int:
    from streamgen.config import parse
    from streamgen.training.model import ModelTrainConfig, train_model

    cfg = parse(ModelTrainConfig, load_config(args.config, args.set))
    print(train_model(cfg, log=lambda m: print(m, file=sys.stderr)))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from streamgen.plugins import manager

    p = manager()
    for reg in p.tasks:
        summary = getattr(reg.obj, "summary", "")
        print(f"{reg.name:10s} {reg.dist:20s} {summary}")
    for failure in p.tasks.failures:
        print(f"streamgen: warning: {failure}", file=sys.stderr)
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from streamgen.output.join import join

    join(args.segments, args.output, log=lambda line: print(line, file=sys.stderr))
    return 0


# GenerateConfig fields set by key=value overrides or a --config file rather than an option of their own
NOT_OPTIONS = ("sampling", "extent", "request", "prompts")


def cmd_generate(args: argparse.Namespace) -> int:
    from streamgen.cli.generate import GenerateConfig, generate
    from streamgen.config import parse

    data = load_config(args.config, [])
    for key in GenerateConfig.model_fields:
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    for item in args.prompt_at or []:
        frame, sep, text = item.partition("=")
        if not sep or not frame.strip().isdigit():
            raise StreamgenError(f"`--prompt-at` must look like FRAME=TEXT with a frame number, but got {item!r}")
        data.setdefault("prompts", {})[int(frame)] = text
    data = load_config(None, args.set, base=data)
    return generate(parse(GenerateConfig, data))


def cmd_serve(args: argparse.Namespace) -> int:
    from streamgen.config import parse
    from streamgen.serve.config import ServeConfig

    cfg = parse(ServeConfig, {k: getattr(args, k) for k in ServeConfig.model_fields if getattr(args, k) is not None})
    try:
        from streamgen.serve.server import serve
    except ImportError as exc:
        raise StreamgenError(f"`streamgen serve` needs the serve extra ({exc.name} is missing): "
                             "pip install 'streamgen[serve]'") from None
    return serve(cfg)


def add_options(parser: argparse.ArgumentParser, model: type, skip: Sequence[str] = ()) -> None:
    """One ``--field-name`` option per field of the pydantic ``model``, its help the field's
    description; values stay strings for the model to validate (booleans are flags)."""
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flags = ["-o"] if name == "output" else []
        flags.append("--" + name.replace("_", "-"))
        help = (field.description or "").replace("%", "%%")  # argparse formats help with %
        if field.annotation is bool:
            parser.add_argument(*flags, dest=name, action="store_true", default=None, help=help)
        else:
            parser.add_argument(*flags, dest=name, help=help)


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from streamgen.bundle import load
    from streamgen.evaluation import run_eval

    if args.threads < 1:
        raise bad("threads", "must be at least 1", args.threads)
    sampling = None
    if args.sampling is not None:
        try:
            sampling = json.loads(args.sampling)
        except json.JSONDecodeError as exc:
            raise bad("sampling", f"must be a JSON object ({exc.msg})", args.sampling) from None
        if not isinstance(sampling, dict):
            raise bad("sampling", "must be a JSON object of sampling fields", args.sampling)
    torch.set_num_threads(args.threads)
    engine = load(args.model)
    engine.precision = args.precision
    run_eval(engine, samples=args.samples, frames=args.frames, drift_frames=args.drift_frames,
             drift_videos=args.drift_videos, wide_patches=args.wide_patches,
             wide_canvases=args.wide_canvases, size=args.size, seed=args.seed, local=args.local, sampling=sampling,
             log=lambda line: print(line, flush=True))  # shown live, also in a file
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with the command line's one-line errors (its subcommands' parsers are of this class too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="streamgen", description="endless image and video generation")
    ap.add_argument("--debug", action="store_true",
                    help=f"print the traceback behind an error (or set {DEBUG_ENV}=1)")
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
    ev = sub.add_parser("eval", help="measure a model: codec, attributes, motion, seams, drift, FID")
    ev.add_argument("--model", help="model folder, or 'tiny'; default: the shipped model")
    ev.add_argument("--samples", type=int, default=90,
                    help="generated samples per accuracy row (and for FID); 30 left rows +-9 points apart")
    ev.add_argument("--frames", type=int, default=8, help="frames per video for camera motion")
    ev.add_argument("--drift-frames", dest="drift_frames", type=int, default=1000)
    ev.add_argument("--drift-videos", dest="drift_videos", type=int, default=3)
    ev.add_argument("--local", choices=("ar", "pnar"), default=None,
                    help="local decoder inside patches; default: the model's preset (autoregressive)")
    ev.add_argument("--sampling", default=None, help="JSON object of sampling fields laid over the model's "
                    "preset, e.g. '{\"local\": \"pnar\", \"pnar_steps\": 2}'")
    ev.add_argument("--precision", choices=("fp32", "mixed"), default="fp32")
    ev.add_argument("--wide-patches", dest="wide_patches", type=int, default=32)
    ev.add_argument("--wide-canvases", dest="wide_canvases", type=int, default=4,
                    help="unconditional wide canvases the seam score is averaged over")
    ev.add_argument("--size", type=int, default=128)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--threads", type=int, default=2)
    ev.set_defaults(func=cmd_eval)

    ts = sub.add_parser("tasks", help="list the installed tasks and the package each came from")
    ts.set_defaults(func=cmd_tasks)

    g = sub.add_parser("generate", help="generate an image or a video into a file, a pipe or RTMP")
    from streamgen.cli.generate import GenerateConfig

    add_options(g, GenerateConfig, skip=NOT_OPTIONS)
    g.add_argument("--prompt-at", dest="prompt_at", action="append", metavar="FRAME=TEXT",
                   help="the prompt from frame FRAME on (t2v); repeatable: a storyboard")
    g.add_argument("--config", help="JSON preset (see configs/)")
    g.add_argument("set", nargs="*", help="dotted overrides, e.g. sampling.top_k=50")
    g.set_defaults(func=cmd_generate)

    sv = sub.add_parser("serve", help="serve live streams over HTTP: an API, a page to watch and steer them",
                        description="Many live streams in one process, advanced together by one scheduler; "
                        "an HTTP API (OpenAPI at /openapi.json) and a page at /. Calls that change something "
                        "need `Authorization: Bearer TOKEN`.")
    from streamgen.serve.config import ServeConfig

    add_options(sv, ServeConfig)
    sv.set_defaults(func=cmd_serve)

    j = sub.add_parser("join", help="join a stream's segments after --resume into one file",
                       description="Joins out.mp4 and out.from000040.mp4 (and further segments) into "
                       "one file: each segment gives its frames up to the frame the next one starts at "
                       "(from its name), copied without encoding again when the cut is at a keyframe.")
    j.add_argument("segments", nargs="+", help="the first segment, then each resumed one (NAME.fromNNNNNN.EXT)")
    j.add_argument("-o", "--output", required=True, help="the joined file (.mp4 .mkv .webm .ts)")
    j.set_defaults(func=cmd_join)
    return ap


DEBUG_ENV = "STREAMGEN_DEBUG"


def main(argv: Sequence[str] | None = None) -> int:
    import os

    parser = build_parser()
    # overrides (key=value) may come before, between or after the options: argparse ends a positional
    # list at the first option, so the ones after it come back unknown and join the list here
    args, extra = parser.parse_known_args(argv)
    debug = args.debug or "--debug" in extra or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    extra = [a for a in extra if a != "--debug"]
    if extra:
        bad_args = [a for a in extra if not hasattr(args, "set") or a.startswith("-") or "=" not in a]
        if bad_args:
            parser.error(f"unrecognized arguments: {' '.join(bad_args)}")
        args.set = [*args.set, *extra]
    try:
        return args.func(args)
    except StreamgenError as exc:
        from streamgen.output.sinks import SinkClosed
        from streamgen.plugins.registry import PluginError

        if isinstance(exc, SinkClosed):
            # stdout may be the closed pipe: point it at /dev/null so interpreter shutdown is quiet
            import os

            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
        if debug:
            import traceback

            traceback.print_exc()
        hint = ""
        if isinstance(exc, PluginError) and exc.__cause__ is not None and not debug:
            hint = f" (`streamgen --debug ...` or {DEBUG_ENV}=1 prints the traceback)"
        print(f"streamgen: error: {exc}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streamgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

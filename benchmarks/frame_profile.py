"""Where a frame's time goes at the default preset, each part against the work it must do.

    python benchmarks/frame_profile.py                     # the shipped model, 48 frames, 2 threads
    python benchmarks/frame_profile.py --model DIR --frames 96 --streams 1 4 8

Runs `streamgen generate`'s path for a 128x128 text-to-video stream with the model's sampling preset
(the engine's frames into a fragmented H.264 MP4) and times, per frame:

- text set-up (the prompt's encoding and cross-attention memory, once per stream) and context
  set-up (`load_context`: the NCP selection's keys and values, offsets, hints, per patch);
- token steps (`decode_step`, one per token; with classifier-free guidance its rows are the
  conditional and the unconditional copy: "of which guidance" is the extra rows' share, from a
  step timed alone at both row counts), sampling (`draw_logits` and `sample`), the patch's closing
  position (`complete`), the border redraw (its P-NAR pass and the prefill of the final tokens);
- the codec's decoders (`Codec.decode`, pixel-guided) and the encoder (the H.264 sink's `write`);
- the rest: the engine loop's own Python.

Beside each part with matrix work, its bound: the time of the same matrix products alone at the
same shapes, back to back on warm caches (the decoder's projections, feed-forward, head and
attention products for the steps and passes; the codec's convolutions, recorded by hooks and
replayed). "efficiency" is bound / measured: 1 would be a part that does nothing but its products.

``--streams`` also times streams decoded together in one batch (`Engine.run_batch`, pixels
included) against one stream; ``--variants`` does it for candidate settings side by side, alternating
them in one run (``name={"precision": "mixed"}`` or ``name={"sampling": {"refine_borders": null}}``,
laid over the model's preset and fp32), each against the preset; ``--paced SECONDS`` runs the paced preset (`--realtime`) for that
long beside a process that keeps one core busy, with its thread count tuned to the load (the default)
and then fixed (`--fixed-threads`), and prints how late each finished.
Absolute times drift on a shared machine; the shares and ratios come from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import streamgen.engine.core as core
from _common import busy_core, steady_keys
from streamgen.bundle import load
from streamgen.output.sinks import open_sink

PROMPT = "a sunset over snowy mountains by a lake, the camera pans right"
SIZE, FPS = 128, 8


class Parts:
    """Exclusive wall time per part: a wrapped call's time minus that of wrapped calls inside it."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._inner = [0.0]

    def wrap(self, obj, name: str, part: str) -> None:
        orig = getattr(obj, name)

        def timed(*args, **kwargs):
            self._inner.append(0.0)
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                inner = self._inner.pop()
                self.total[part] += dt - inner
                self.calls[part] += 1
                self._inner[-1] += dt

        setattr(obj, name, timed)


def timed_run(eng, frames: int, sampling: dict, streams: int = 1) -> tuple[Parts, float]:
    """``streams`` streams (one batch) of ``frames`` frames, each into its own MP4, with every part
    wrapped; (parts, wall seconds)."""
    parts = Parts()
    model = eng.model
    parts.wrap(eng, "encode_text", "text set-up")
    parts.wrap(model, "text_memory", "text set-up")
    parts.wrap(model, "load_context", "context set-up")
    parts.wrap(model, "decode_step", "token steps")
    parts.wrap(core, "draw_logits", "sampling")
    parts.wrap(core, "sample", "sampling")
    parts.wrap(model, "complete", "patch close")
    parts.wrap(eng, "_refine_borders", "border redraw")
    parts.wrap(eng.codec, "decode", "codec decode")
    reqs = [dict(prompt=PROMPT, height=SIZE, width=SIZE, frames=frames, seed=s, sampling=sampling)
            for s in range(streams)]
    with tempfile.TemporaryDirectory() as tmp:
        sinks = [open_sink(str(Path(tmp) / f"{i}.mp4"), fps=FPS) for i in range(streams)]
        for sink in sinks:
            parts.wrap(sink, "write", "encoder")
        t0 = time.perf_counter()
        for batch in eng.run_batch("t2v", reqs):
            for sink, frame in zip(sinks, batch):
                sink.write(frame)
        for sink in sinks:
            sink.close()
        wall = time.perf_counter() - t0
    for name in ("encode_text", "_refine_borders"):
        delattr(eng, name)  # instance attributes over the class's methods
    for name in ("text_memory", "load_context", "decode_step", "complete"):
        delattr(model, name)
    delattr(eng.codec, "decode")
    return parts, wall


def _alone(ops: list, reps: int) -> float:
    """Seconds per round of ``ops`` (zero-argument callables), run back to back after a warm-up."""
    for _ in range(max(3, reps // 10)):
        for op in ops:
            op()
    t0 = time.perf_counter()
    for _ in range(reps):
        for op in ops:
            op()
    return (time.perf_counter() - t0) / reps


def decoder_products(cfg, rows: int, positions: int, keys: int) -> list:
    """The matrix products of one decoder pass over ``positions`` positions of ``rows`` rows that
    attend to ``keys`` keys: per layer the qkv, output, cross-attention query and output projections,
    the feed-forward's two, the attention's two products per head; then the head."""
    D, Fw, V, H = cfg.width, cfg.mlp_ratio * cfg.width, cfg.vocab_size, cfg.heads
    n = rows * positions
    shapes = [(3 * D, D), (D, D), (Fw, D), (D, Fw)] + ([(D, D), (D, D)] if cfg.text_dim else [])
    ops = []
    for _ in range(cfg.layers):
        for o, i in shapes:
            x, w, b = torch.randn(n, i), torch.randn(i, o), torch.randn(o)
            ops.append(lambda x=x, w=w, b=b: torch.addmm(b, x, w))
        q, k = torch.randn(rows, H, positions, D // H), torch.randn(rows, H, keys, D // H)
        p = torch.randn(rows, H, positions, keys)
        ops.append(lambda q=q, k=k: torch.matmul(q, k.transpose(-1, -2)))
        ops.append(lambda p=p, v=k: torch.matmul(p, v))
    h, w = torch.randn(n, D), torch.randn(D, V)
    ops.append(lambda: torch.mm(h, w))
    return ops


def codec_convolutions(codec) -> list:
    """The codec's convolutions of one 128x128 frame's decode after another (the pixel-guided
    decoder's path), captured by forward hooks."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i[0].detach().clone())))
             for m in codec_modules(codec) if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    grid = SIZE // codec.factor
    codec.decode(torch.randint(0, codec.vocab_size, (1, grid, grid)), torch.zeros(1, SIZE, SIZE, 3, dtype=torch.uint8))
    for h in hooks:
        h.remove()
    return [lambda m=m, x=x: m(x) for m, x in calls]


def codec_modules(codec):
    """Every nn.Module reachable from the codec's attributes (its decoders)."""
    seen = []
    for value in vars(codec).values():
        if isinstance(value, torch.nn.Module):
            seen.extend(value.modules())
    return seen


def step_rows_share(eng, reps: int) -> float:
    """Share of a guided decode step's time that its unconditional rows add: 1 - t(1 row) / t(2 rows)."""
    model = eng.model
    states, mask = eng.encode_text(PROMPT)
    times = []
    for rows in (1, 2, 1, 2):
        ws = model.new_workspace(rows, max_context=eng.model.extent.num_offsets - 1)
        ws.ctx_len = ws.kv.shape[4] - model.S
        mem = model.text_memory(states.expand(rows, -1, -1), mask.expand(rows, -1))
        tok = torch.zeros(rows, dtype=torch.long)
        times.append(_alone([lambda: model.decode_step(ws, tok, 3, mem)], reps))
    one, two = statistics.mean(times[0::2]), statistics.mean(times[1::2])
    return 1 - one / two


def batch_rates(eng, streams: list[int], frames: int, sampling: dict,
                variants: dict[str, dict] | None = None) -> dict[str, dict[int, float]]:
    """Frames/s per variant and stream count (frames of every stream, pixels included), in one run:
    the variants (``{"precision": ..., "sampling": {...}}`` over the engine's fp32 and ``sampling``)
    alternate, twice over, and each figure is the median of its two."""
    variants = variants or {"preset": {}}
    out: dict[str, dict[int, list[float]]] = {name: defaultdict(list) for name in variants}
    for _ in range(2):
        for name, v in variants.items():
            eng.precision = v.get("precision", "fp32")
            over = {**sampling, **v.get("sampling", {})}
            for n in streams:
                reqs = [dict(prompt=PROMPT, height=SIZE, width=SIZE, frames=frames + 2, seed=s, sampling=over)
                        for s in range(n)]
                gen = eng.run_batch("t2v", reqs)
                for _ in range(2):
                    next(gen)
                t0 = time.perf_counter()
                for _ in range(frames):
                    next(gen)
                out[name][n].append(n * frames / (time.perf_counter() - t0))
                gen.close()
    eng.precision = "fp32"
    return {name: {n: statistics.median(v) for n, v in by_n.items()} for name, by_n in out.items()}


def paced_lag(model: str | None, seconds: float, threads: int, fixed: bool = False) -> tuple[float, int, str]:
    """The paced preset (`streamgen generate --realtime`, with ``--fixed-threads`` if ``fixed``) for
    ``seconds`` beside a busy core."""
    import subprocess
    import sys

    with busy_core(), tempfile.TemporaryDirectory() as tmp:
        frames = int(seconds * FPS)
        cmd = [sys.executable, "-m", "streamgen.cli", "generate", "--task", "t2v", "--prompt", PROMPT,
               "--frames", str(frames), "--realtime", "-o", f"{tmp}/p.mp4"]
        if model:
            cmd += ["--model", model]
        if fixed:
            cmd.append("--fixed-threads")
        t0 = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    lag = max(0.0, wall - seconds)  # start-up (loading the model) included
    warned = [line for line in run.stderr.splitlines() if "behind" in line]
    return lag, run.returncode, warned[-1] if warned else "no lag warning"


def table(parts: Parts, wall: float, frames: int, streams: int, rows: int, bounds: dict,
          guide_share: float | None, step_bound: float, keys: int) -> None:
    n = frames * streams
    steps = parts.calls["token steps"]
    print(f"\n{streams} stream(s), {frames} frames each, in {wall:.2f} s: {n / wall:.2f} frames/s; {steps} "
          f"token steps of {rows} rows, {parts.calls['border redraw']} border redraws\n")
    print("| part | ms/frame | share | bound ms/frame | efficiency |")
    print("|---|---|---|---|---|")
    for part in ["text set-up", "context set-up", "token steps", "sampling", "patch close", "border redraw",
                 "codec decode", "encoder"]:
        t = parts.total.get(part, 0.0)
        b = bounds.get(part)
        bound = f"{b / n * 1e3:.1f}" if b is not None else "-"
        eff = f"{b / t:.2f}" if b is not None and t > 0 else "-"
        print(f"| {part} | {t / n * 1e3:.1f} | {t / wall:.1%} | {bound} | {eff} |")
        if part == "token steps" and guide_share is not None:
            print(f"| - of which guidance (the unconditional rows) | {t * guide_share / n * 1e3:.1f} | "
                  f"{t * guide_share / wall:.1%} | - | - |")
    other = wall - sum(parts.total.values())
    print(f"| the rest (engine loop, Python) | {other / n * 1e3:.1f} | {other / wall:.1%} | - | - |")
    step = parts.total["token steps"] / steps
    print(f"\ndecode step: {step * 1e3:.3f} ms measured, {step_bound * 1e3:.3f} ms its matrix products alone "
          f"({rows} rows, {keys} keys): {step_bound / step:.2f} of the matmul bound")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a model folder (default: the shipped model)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4, help="streams of the batched parts table")
    ap.add_argument("--streams", type=int, nargs="*", default=[1, 4, 8])
    ap.add_argument("--batch-frames", type=int, default=16)
    ap.add_argument("--paced", type=float, default=0.0, help="seconds of the paced run beside a busy core")
    ap.add_argument("--variants", nargs="*", default=[], metavar='NAME=JSON',
                    help='candidates timed against the preset, e.g. mixed=\'{"precision": "mixed"}\' '
                    'noredraw=\'{"sampling": {"refine_borders": null}}\'')
    args = ap.parse_args()
    variants = {"preset": {}}
    for spec in args.variants:
        name, _, value = spec.partition("=")
        try:
            variants[name] = json.loads(value)
        except json.JSONDecodeError:
            ap.error(f"--variants {spec!r}: NAME=JSON, with a JSON object after '='")
        if not isinstance(variants[name], dict) or set(variants[name]) - {"precision", "sampling"}:
            ap.error(f"--variants {spec!r}: the JSON object may hold precision and sampling")
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    eng = load(args.model)
    sampling = dict(eng.preset)
    cfg = eng.model.cfg
    print(f"# {platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
          f"model {args.model or 'shipped'}, sampling {sampling}")

    list(eng.run("t2v", prompt=PROMPT, height=SIZE, width=SIZE, frames=3, seed=0, sampling=sampling))  # warm
    guided = sampling.get("guidance", 1.0) != 1.0
    keys = round(steady_keys(eng, SIZE))  # context and own positions of a steady patch's token
    guide_share = step_rows_share(eng, 200) if guided else 0.0
    conv_bound = _alone(codec_convolutions(eng.codec), 20)
    for streams in sorted({1, args.batch}):
        saved = (core.draw_logits, core.sample)
        parts, wall = timed_run(eng, args.frames, sampling, streams)
        core.draw_logits, core.sample = saved
        rows = (2 if guided else 1) * streams
        step_bound = _alone(decoder_products(cfg, rows, 1, keys), 200)
        pass_bound = _alone(decoder_products(cfg, rows, eng.model.S, keys + eng.model.S), 50)
        table(parts, wall, args.frames, streams, rows, {
            "token steps": parts.calls["token steps"] * step_bound,
            "patch close": parts.calls["patch close"] * pass_bound / eng.model.S,
            "border redraw": parts.calls["border redraw"] * 2 * pass_bound,  # its P-NAR pass and the prefill
            "codec decode": parts.calls["codec decode"] * conv_bound * streams,
        }, guide_share if streams == 1 else None, step_bound, keys)

    if args.streams:
        rates = batch_rates(eng, args.streams, args.batch_frames, sampling, variants)
        base = rates["preset"]
        print("\n| variant | streams in one batch | frames/s (all streams) | x one stream | x the preset |")
        print("|---|---|---|---|---|")
        for name, by_n in rates.items():
            one = by_n.get(1)
            for k, r in by_n.items():
                print(f"| {name} | {k} | {r:.2f} | {f'{r / one:.2f}' if one else '-'} | {r / base[k]:.2f} |")
    if args.paced:
        print()
        for fixed in (False, True):
            lag, rc, line = paced_lag(args.model, args.paced, args.threads, fixed)
            how = f"{args.threads} threads fixed" if fixed else f"threads tuned between {args.threads} and 1"
            print(f"paced preset for {args.paced:.0f} s beside a busy core, {how}: finished {lag:.1f} s after "
                  f"its last frame's time (rc {rc}); {line}", flush=True)


if __name__ == "__main__":
    main()

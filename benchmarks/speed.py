"""The speed table: streamgen's decoders against two reference decoders, all in one run.

    python benchmarks/speed.py                   # bench preset, random weights, palette codec
    python benchmarks/speed.py --model DIR       # a model folder (model/vqgan/pg safetensors)
    python benchmarks/speed.py --quick           # fewer frames, for a smoke test

Video is 128x128 px. Printed, as Markdown tables:

- decoding: tokens/s and frames/s at batch 1 and with 8 streams in one batch, in fp32 and in
  "mixed" precision (bfloat16 attention and whole-patch matmuls, fp32 single-token matmuls: see
  VisionDecoder.new_workspace), and with the P-NAR local decoder; this machine's matmul bound for the model (a decode
  step that did nothing but its matmuls, with and without the attention's two products) beside them;
- peak RSS after 10, 100 and 1,000 frames (each in a fresh process) and time(1,000) / time(100);
- the share of wall time spent in codec decoding and in encoding (H.264 into an .mp4);
- two reference decoders built from the same weights: "recompute" re-runs the model over the
  whole window of context for every token (the way taming-transformers' sliding-window sampler and
  the open NUWA implementation decode), "full KV" keeps the keys and values of every generated patch
  and never evicts; streamgen's speed as a multiple of each, and each one's cache as the video grows;
- wavefront decoding of independent patches against one patch at a time, on wide canvases.

Absolute times drift on a shared machine: compare the ratios, which come from one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from _common import steady_keys, steady_rate
from engine_core import matmul_bound
from streamgen import Engine, ModelConfig, PRESETS, Plan, VisionDecoder
from streamgen.engine.adc import rel_index
from streamgen.bundle import SHIPPED, load
from streamgen.codecs import PaletteCodec
from streamgen.config import SamplingConfig
from streamgen.engine.sampling import sample
from streamgen.output.sinks import open_sink

SIZE = 128


def make_engine(spec: str | None, pnar: bool = False) -> Engine:
    """The engine to measure: a model folder, "shipped", or the bench preset with random weights."""
    if spec in (None, "bench"):
        torch.manual_seed(0)
        cfg = ModelConfig(**PRESETS["bench"], pnar=pnar)
        return Engine(VisionDecoder(cfg), PaletteCodec(cfg.vocab_size, factor=8))
    return load(SHIPPED if spec == "shipped" else spec)


def tokens_per_frame(eng: Engine) -> int:
    f = eng.codec.factor
    return (SIZE // f) ** 2


def stream_rate(eng: Engine, frames: int, warm: int = 2, **req) -> float:
    """Steady-state tokens/s of one unconditional stream (after ``warm`` frames of growing context)."""
    gen = eng.generate_tokens(Plan.basic("omega", *eng.grid(SIZE, SIZE), None, eng.model.extent), **req)
    return steady_rate(eng, gen, warm, frames)


def decoding_rows(eng: Engine, frames: int, windows: int, keys: int) -> tuple[list[tuple[str, float]], list]:
    """(label, tokens/s) per configuration, interleaved window by window against drift; bounds."""
    pnar = eng.model.cfg.pnar
    configs = {
        "batch 1, fp32": dict(precision="fp32", batch=1, sampling=None),
        "batch 1, mixed": dict(precision="mixed", batch=1, sampling=None),
        "8 streams, fp32": dict(precision="fp32", batch=8, sampling=None),
        "8 streams, mixed": dict(precision="mixed", batch=8, sampling=None),
    }
    if pnar:
        pn = SamplingConfig(local="pnar", pnar_steps=4)
        configs["batch 1, P-NAR (4 passes), fp32"] = dict(precision="fp32", batch=1, sampling=pn)
        configs["batch 1, P-NAR (4 passes), mixed"] = dict(precision="mixed", batch=1, sampling=pn)
    rates: dict[str, list[float]] = {k: [] for k in configs}
    bounds = [(matmul_bound(eng.model.cfg), matmul_bound(eng.model.cfg, keys=keys))]
    for _ in range(windows):
        for label, c in configs.items():
            eng.precision = c["precision"]
            seeds = list(range(c["batch"]))
            rates[label].append(stream_rate(eng, frames, seed=seeds, batch=c["batch"], sampling=c["sampling"]))
        bounds.append((matmul_bound(eng.model.cfg), matmul_bound(eng.model.cfg, keys=keys)))
    eng.precision = "fp32"
    return [(k, statistics.median(v)) for k, v in rates.items()], bounds


def child_run(spec: str | None, frames: int) -> None:
    """In a fresh process: stream ``frames`` frames, print seconds and peak RSS (MB)."""
    eng = make_engine(spec)
    t0 = time.perf_counter()
    for _ in eng.stream(height=SIZE, width=SIZE, frames=frames, seed=0):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{time.perf_counter() - t0:.4f} {peak:.1f}")


def rss_rows(spec: str | None, lengths: list[int], threads: int) -> dict[int, tuple[float, float]]:
    out = {}
    for n in lengths:
        cmd = [sys.executable, __file__, "--child", str(n), "--threads", str(threads)]
        if spec:
            cmd += ["--model", spec]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        secs, peak = res.stdout.split()[-2:]
        out[n] = (float(secs), float(peak))
    return out


def time_shares(eng: Engine, frames: int) -> tuple[float, float, float]:
    """(total s, codec decoding s, encoding s) for ``frames`` frames written to an .mp4."""
    path = os.path.join(tempfile.mkdtemp(), "speed.mp4")
    sink = open_sink(path, fps=8, size=(SIZE, SIZE))
    t0 = time.perf_counter()
    for frame in eng.stream(height=SIZE, width=SIZE, frames=frames, seed=0):
        sink.write(frame)
    sink.close()
    return time.perf_counter() - t0, eng.stats.decode_seconds, sink.seconds


# --- reference decoders -----------------------------------------------------------------------------
def history(eng: Engine, plan: Plan, frames: int):
    """Tokens (1, N, M) and positions of a plan's first ``frames`` frames, sampled by streamgen."""
    ph, pw = eng.model.cfg.patch_h, eng.model.cfg.patch_w
    toks, pos = [], []
    for tf in eng.generate_tokens(plan, seed=0):
        for it in list(plan.iter_from(tf.index))[: plan.rows * plan.cols]:
            f, y, x = it.pos
            toks.append(tf.tokens[0, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw].reshape(-1))
            pos.append(it.pos)
        if tf.index + 1 == frames:
            break
    return torch.stack(toks)[None], pos


@torch.inference_mode()
def recompute_rate(model: VisionDecoder, toks, pos, tokens: int) -> float:
    """Tokens/s decoding the last patch's first ``tokens`` tokens by re-running the whole sequence."""
    t0 = time.perf_counter()
    for m in range(tokens):
        model(toks, pos)[:, -1, m]  # the whole sequence, every token
    return tokens / (time.perf_counter() - t0)


@torch.inference_mode()
def full_cache_rate(model: VisionDecoder, toks, pos) -> tuple[float, int]:
    """Tokens/s decoding the last patch against every earlier patch, and the cache bytes."""
    ext = model.extent
    ws = model.new_workspace(1, len(pos))
    ctx = []
    for i in range(len(pos) - 1):  # build every patch's cache once (prefill), never evict
        model.load_context(ws, [[]])
        model.prefill(ws, toks[:, i])
        ctx.append((model.patch_payload(ws), pos[i]))
    cur = pos[-1]

    def clamp(p):  # offsets outside the trained window are clamped to its edge
        return (max(p[0], cur[0] - ext.f), min(max(p[1], cur[1] - ext.h), cur[1] + ext.h),
                min(max(p[2], cur[2] - ext.w), cur[2] + ext.w))

    loaded = [(pay, rel_index(ext, clamp(p), cur)) for pay, p in ctx]
    nbytes = sum(p.numel() * p.element_size() for p, _ in loaded)
    u = torch.rand(model.M, dtype=torch.float64)
    cfg = SamplingConfig()
    t0 = time.perf_counter()
    model.load_context(ws, [loaded])
    tok = torch.full((1,), model.bos)
    for m in range(model.M):  # sampling included, as in streamgen's loop; the history's token is fed
        sample(model.decode_step(ws, tok, m), u[m:m + 1], cfg)
        tok = toks[:, -1, m]
    return model.M / (time.perf_counter() - t0), nbytes


def streamgen_at(eng: Engine, frames: int) -> tuple[float, int]:
    """streamgen's tokens/s on frame ``frames`` of a stream, and its NCP's bytes before that frame."""
    gen = eng.generate_tokens(Plan.basic("omega", *eng.grid(SIZE, SIZE), None, eng.model.extent), seed=0)
    for _ in range(frames - 1):
        tf = next(gen)
    nbytes = sum(e.payload.numel() * e.payload.element_size() for e in tf.pool.values())
    tok0, t0 = eng.stats.tokens, time.perf_counter()
    next(gen)
    rate = (eng.stats.tokens - tok0) / (time.perf_counter() - t0)
    gen.close()
    return rate, nbytes


def wavefront_rows(eng: Engine, canvases: list[tuple[int, int, str]]) -> list[tuple[str, float, float]]:
    """(label, one-by-one tokens/s, wavefront tokens/s) on one image per canvas, interleaved."""
    ph, pw, f = eng.model.cfg.patch_h, eng.model.cfg.patch_w, eng.codec.factor
    out = []
    for cols, rows, order in canvases:
        for kv_name in ("fp32", "mixed"):
            eng.precision = kv_name
            rates = {False: [], True: []}
            for _ in range(2):
                for wave in (False, True):
                    eng.wavefront = wave
                    t0 = time.perf_counter()
                    for _ in eng.stream(height=rows * ph * f, width=cols * pw * f, frames=1, seed=0,
                                        order=order, extent=dict(w=1, h=1, f=0)):
                        pass
                    rates[wave].append(eng.stats.tokens / (time.perf_counter() - t0))
            out.append((f"{cols}x{rows} patches, {order}, {kv_name}", max(rates[False]),
                        max(rates[True])))
    eng.precision, eng.wavefront = "fp32", True
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder, 'shipped', or 'bench' (random, default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lengths", default="2,8,16", help="video lengths of the reference comparison")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        child_run(args.model, args.child)
        return
    eng = make_engine(args.model, pnar=True)
    cfg = eng.model.cfg
    tpf = tokens_per_frame(eng)
    print(f"# streamgen speed, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"model: {args.model or 'bench preset (random weights)'}: width {cfg.width}, {cfg.layers} layers, "
          f"{cfg.patch_h}x{cfg.patch_w}-token patches, {cfg.vocab_size} codes; {SIZE}x{SIZE} px video, "
          f"{tpf} tokens a frame\n")

    keys = round(steady_keys(eng, SIZE))
    rows, bounds = decoding_rows(eng, 1 if args.quick else 2, 2 if args.quick else 3, keys)
    weights_only = statistics.median(b for b, _ in bounds)
    bound = statistics.median(b for _, b in bounds)
    base = rows[0][1]
    print("| decoding | tokens/s | frames/s | x batch 1 | / matmul bound | / weight-matmul bound |")
    print("|---|---|---|---|---|---|")
    for label, rate in rows:
        print(f"| {label} | {rate:.0f} | {rate / tpf:.2f} | {rate / base:.2f}x | {rate / bound:.2f} | "
              f"{rate / weights_only:.2f} |")
    print(f"\nmatmul bound (batch 1, fp32, warm caches, nothing but the decode step's matmuls): {bound:.0f} "
          f"tokens/s with the attention's two products over the {keys} keys a token attends "
          f"to on average, {weights_only:.0f} tokens/s for the weight matmuls alone (each measured "
          f"{len(bounds)} times between the windows: {min(b for _, b in bounds):.0f}-{max(b for _, b in bounds):.0f}, "
          f"{min(b for b, _ in bounds):.0f}-{max(b for b, _ in bounds):.0f})\n")

    lengths = [10, 100, 1000] if not args.quick else [10, 30, 100]
    rss = rss_rows(args.model, lengths, args.threads)
    print("| frames | seconds | peak RSS MB |")
    print("|---|---|---|")
    for n, (secs, peak) in rss.items():
        print(f"| {n} | {secs:.1f} | {peak:.1f} |")
    a, b = lengths[1], lengths[2]
    print(f"\npeak RSS {b} frames / {a} frames = {rss[b][1] / rss[a][1]:.3f}; "
          f"time({b}) / time({a}) = {rss[b][0] / rss[a][0]:.2f} (each a fresh process)\n")

    total, dec, enc = time_shares(eng, 8 if args.quick else 32)
    print(f"time shares over {8 if args.quick else 32} frames into an .mp4: codec decoding "
          f"{100 * dec / total:.1f}%, encoding {100 * enc / total:.1f}%, the rest (the transformer and "
          f"sampling) {100 * (total - dec - enc) / total:.1f}%\n")

    print("| frames | streamgen tok/s | recompute tok/s | full KV tok/s | x recompute | x full KV | "
          "NCP cache MB | full KV cache MB |")
    print("|---|---|---|---|---|---|---|---|")
    model = eng.model
    for frames in (int(v) for v in args.lengths.split(",")):
        plan = Plan.basic("omega", *eng.grid(SIZE, SIZE), frames, model.extent)
        toks, pos = history(eng, plan, frames)
        ours, ours_bytes = streamgen_at(eng, frames)
        rec = recompute_rate(model, toks, pos, 2 if args.quick else 4)
        full, full_bytes = full_cache_rate(model, toks, pos)
        print(f"| {frames} | {ours:.0f} | {rec:.1f} | {full:.0f} | {ours / rec:.0f}x | {ours / full:.1f}x | "
              f"{ours_bytes / 1e6:.1f} | {full_bytes / 1e6:.1f} |")

    canvases = [(8, 8, "omega"), (32, 8, "zeta")] if not args.quick else [(8, 4, "omega")]
    print("\n| wavefront, one image | one by one tok/s | wavefront tok/s | speed-up |")
    print("|---|---|---|---|")
    for label, seq, wave in wavefront_rows(eng, canvases):
        print(f"| {label} | {seq:.0f} | {wave:.0f} | {wave / seq:.2f}x |")


if __name__ == "__main__":
    main()

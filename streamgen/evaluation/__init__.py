"""Measuring generated images and videos of the procedural landscapes (`streamgen eval`).

- `AttributeClassifier`: the project's own reader of sky, terrain and lake from a frame: softmax
  regression on colour statistics of horizontal bands, fitted on fresh renders of every attribute
  combination (it is a measuring tool, so held-out combinations are fine to fit on), sharp, blurred
  and noisy (`READER_VIEWS`): generated frames come through a lossy codec, and a reader fitted on
  sharp renders alone misread a third of the terrains in the codec's own reconstructions of true
  renders. Its accuracy on ground-truth renders and on their codec reconstructions (of all
  combinations, and of the held-out ones, which the codec never trained on either) is printed beside
  every measurement, so one knows how far to trust it (`benchmarks/reader_check.py` checks further).
- `camera_motion`: pan left, pan right or still, from the horizontal shift that best aligns the lower
  half of consecutive frames (the terrain moves with the camera; the sky does not).
- `seam_score`: mean absolute difference across patch boundaries divided by that between neighbouring
  pixel columns inside patches (1.0: seams are invisible).
- FID with a pluggable feature extractor (`fid`); the default extractor is this project's own (pooled
  features of the codec's encoder), so its figures are not comparable with published FIDs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streamgen.training.data import landscapes as L

BANDS = 12
# The views of each fitting render the reader learns from: (blur factor, noise sigma in grey levels).
READER_VIEWS: tuple[tuple[int, float], ...] = ((1, 0.0), (4, 0.0), (8, 0.0), (1, 32.0), (4, 32.0))

EVAL_SAMPLES = 90  # generated samples per accuracy row: near 85% one standard error is about 4 points


def degrade(frames: np.ndarray, blur: int = 1, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """uint8 (N, H, W, 3) averaged over ``blur`` x ``blur`` cells and scaled back up bilinearly, then
    with Gaussian noise of sigma ``noise`` added: the detail a lossy codec loses and the speckle a
    generating model adds (1, 0: unchanged). Any H and W: a cell cut by the border averages what it holds."""
    x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float()
    if blur > 1:
        cells = F.avg_pool2d(x, blur, ceil_mode=True)
        x = F.interpolate(cells, size=x.shape[2:], mode="bilinear", align_corners=False)
    if noise:
        x = x + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def band_features(frames: np.ndarray | Tensor) -> Tensor:
    """uint8 (N, H, W, 3) -> (N, BANDS * 9): mean, std and mean |horizontal gradient| of RGB per band."""
    x = torch.as_tensor(np.asarray(frames)).float().div(255)  # (N, H, W, 3)
    N, H, W, _ = x.shape
    bands = torch.tensor_split(x, BANDS, dim=1)
    feats = []
    for b in bands:
        feats += [b.mean((1, 2)), b.std((1, 2)), (b[:, :, 1:] - b[:, :, :-1]).abs().mean((1, 2))]
    return torch.cat(feats, 1)


@dataclass
class _Head:
    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def predict(self, feats: Tensor) -> Tensor:
        return (((feats - self.mean) / self.std) @ self.weight.t() + self.bias).argmax(-1)


def _fit_head(feats: Tensor, labels: Tensor, classes: int, steps: int = 300) -> _Head:
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mean) / std
    w = torch.zeros(classes, z.shape[1], requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.t() + b, labels) + 1e-3 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return _Head(mean, std, w.detach(), b.detach())


class AttributeClassifier:
    """Reads sky, terrain and lake from frames of the procedural landscapes."""

    ATTRS = ("sky", "terrain", "lake")

    def __init__(self, heads: dict[str, _Head]):
        self.heads = heads

    @classmethod
    def fit(cls, size: int = 128, per_combo: int = 24, seed: int = 12345,
            views: tuple[tuple[int, float], ...] = READER_VIEWS) -> "AttributeClassifier":
        """Fitted on `render_set` renders, each seen in every one of ``views`` ((blur, noise) pairs of
        `degrade`; ((1, 0.0),) fits on the sharp renders alone, as the reader did before 2026-11-23)."""
        frames, labels = render_set(size, per_combo, seed)
        feats = torch.cat([band_features(degrade(frames, b, n, seed + k)) for k, (b, n) in enumerate(views)])
        heads = {a: _fit_head(feats, labels[a].repeat(len(views)), len(L.ATTRIBUTES[a])) for a in cls.ATTRS}
        return cls(heads)

    def predict(self, frames: np.ndarray | Tensor) -> dict[str, Tensor]:
        feats = band_features(frames)
        return {a: h.predict(feats) for a, h in self.heads.items()}


def render_set(size: int, per_combo: int, seed: int, split: str = "all") -> tuple[np.ndarray, dict[str, Tensor]]:
    """Still frames of every sky x terrain x lake combination (of ``split``) and their labels."""
    frames, labels = [], {a: [] for a in ("sky", "terrain", "lake")}
    i = 0
    for sky in L.ATTRIBUTES["sky"]:
        for terrain in L.ATTRIBUTES["terrain"]:
            held = {"sky": sky, "terrain": terrain} in [dict(h) for h in L.HELD_OUT]
            if (split == "train" and held) or (split == "heldout" and not held):
                continue
            for lake in (False, True):
                for k in range(per_combo):
                    i += 1
                    scene = L.Scene(sky, terrain, lake, "still", seed * 100_003 + i)
                    frames.append(L.render(scene, size, size, x0=float(k * 37 % 500))[0])
                    labels["sky"].append(L.ATTRIBUTES["sky"].index(sky))
                    labels["terrain"].append(L.ATTRIBUTES["terrain"].index(terrain))
                    labels["lake"].append(int(lake))
    return np.stack(frames), {a: torch.tensor(v) for a, v in labels.items()}


def camera_motion(frames: np.ndarray | Tensor, max_shift: int | None = None) -> str:
    """"pan left", "pan right" or "still" from consecutive frames uint8 (F, H, W, 3).

    The median over frame pairs of the shift s minimising |frame[t+1][:, s:] - frame[t][:, :-s]| in
    the lower half: the scene slides right (s > 0) when the camera pans left.
    """
    x = torch.as_tensor(np.asarray(frames)).float().mean(-1)  # (F, H, W) grey
    Fr, H, W = x.shape
    low = x[:, H // 2:]
    max_shift = max_shift or max(2, W // 4)
    shifts = []
    for t in range(Fr - 1):
        a, b = low[t], low[t + 1]
        best, best_err = 0, float("inf")
        for s in range(-max_shift, max_shift + 1):
            if s >= 0:
                err = (b[:, s:] - a[:, :W - s]).abs().mean()
            else:
                err = (b[:, :W + s] - a[:, -s:]).abs().mean()
            err = float(err) + 1e-4 * abs(s)  # prefer the smaller shift on ties
            if err < best_err:
                best, best_err = s, err
        shifts.append(best)
    s = float(np.median(shifts)) if shifts else 0.0
    threshold = max(1.0, H / 64)
    if s >= threshold:
        return "pan left"
    if s <= -threshold:
        return "pan right"
    return "still"


def seam_score(image: np.ndarray | Tensor, patch_px: int) -> float:
    """Mean |difference| across vertical patch boundaries / mean |difference| of neighbouring
    columns inside patches, for uint8 (H, W, 3). 1.0 means the boundaries are invisible."""
    x = torch.as_tensor(np.asarray(image)).float()
    d = (x[:, 1:] - x[:, :-1]).abs().mean((0, 2))  # (W - 1,) column differences
    cols = torch.arange(1, x.shape[1])
    at_seam = cols % patch_px == 0
    return float(d[at_seam].mean() / d[~at_seam].mean().clamp(min=1e-6))


class CodecFeatures(torch.nn.Module):
    """The default FID feature extractor: global mean and std of the codec encoder's last features.

    Not Inception: figures are only comparable with other figures made with the same codec.
    """

    def __init__(self, codec):
        super().__init__()
        self.codec = codec

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:  # uint8 (N, 3, H, W) as torchmetrics passes them
        from streamgen.codecs.vqgan import to_pixels

        z = self.codec.vq.encoder(to_pixels(images.permute(0, 2, 3, 1).contiguous()))
        return torch.cat([z.mean((2, 3)), z.std((2, 3))], 1).double()


def fid(real: Tensor, fake: Tensor, extractor: torch.nn.Module) -> float:
    """FID between uint8 (N, H, W, 3) sets with ``extractor`` features (torchmetrics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    m = FrechetInceptionDistance(feature=extractor, normalize=False)
    m.update(real.permute(0, 3, 1, 2).contiguous(), real=True)
    m.update(fake.permute(0, 3, 1, 2).contiguous(), real=False)
    return float(m.compute())


def block_fid(real: Tensor, fake: Tensor, extractor: torch.nn.Module, block: int) -> float:
    """The paper's Block-FID: FID over the ``block`` x ``block`` tiles of large images."""
    def tiles(x: Tensor) -> Tensor:
        N, H, W, C = x.shape
        x = x[:, :H // block * block, :W // block * block]
        x = x.reshape(N, H // block, block, W // block, block, C).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, block, block, C)

    return fid(tiles(real), tiles(fake), extractor)


class BandFeatures(torch.nn.Module):
    """A feature extractor for codecs without a neural encoder: the classifier's band statistics."""

    def forward(self, images: Tensor) -> Tensor:
        return band_features(images.permute(0, 2, 3, 1)).double()


# Captions in wordings the training never used: does the model follow the meaning, not the template?
_UNSEEN_SKY = {"day": "a bright daytime sky", "sunset": "an orange evening sky at dusk",
               "night": "a dark sky at night"}
_UNSEEN_TEMPLATES = ("{terrain}, pictured with {sky}", "scenery: {sky} and {terrain}",
                     "{sky} stretching over {terrain}")


def unseen_caption(scene: L.Scene, variant: int) -> str:
    """A still-image caption from templates and sky wordings that `landscapes.caption` never produces."""
    t = _UNSEEN_TEMPLATES[variant % len(_UNSEEN_TEMPLATES)]
    text = t.format(sky=_UNSEEN_SKY[scene.sky], terrain=scene.terrain)
    return text + (", with a lake" if scene.lake else "")


def decode_both(codec, tok: Tensor) -> tuple[Tensor, Tensor]:
    """Frames of tokens (F, h, w) by the plain decoder, and by the pixel-guided decoder chained on
    its own output from the plain first frame, as a video is decoded in generation."""
    plain = codec.decode(tok)
    pg = [plain[:1]]
    for t in range(1, len(tok)):
        pg.append(codec.decode(tok[t:t + 1], pg[-1]))
    return plain, torch.cat(pg)


def temporal_errors(codec, clip: Tensor) -> tuple[float, float]:
    """Mean |decoded frame difference - true frame difference| (grey levels) of the plain decoder and
    of the pixel-guided decoder chained on its own output (as in generation), on uint8 (F, H, W, 3)."""
    plain, pg = decode_both(codec, codec.encode(clip))
    true_d = clip[1:].float() - clip[:-1].float()

    def err(x: Tensor) -> float:
        return (x[1:].float() - x[:-1].float() - true_d).abs().mean().item()
    return err(plain), err(pg)


class _Figures(dict):
    """The eval's results: each figure is logged as soon as it is measured."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def __setitem__(self, key: str, value: float) -> None:
        super().__setitem__(key, value)
        self.log(f"{key:62s} {value:8.3f}")


def run_eval(engine, *, samples: int = EVAL_SAMPLES, frames: int = 8, drift_frames: int = 1000, drift_videos: int = 3,
             wide_patches: int = 32, wide_canvases: int = 4, size: int = 128, seed: int = 0,
             local: str | None = None, sampling: dict | None = None, log=print) -> dict[str, float]:
    """Every measurement of the default model's eval for ``engine``; prints and returns the figures.

    Generation samples as `streamgen generate` does (``engine.preset``; unconditional tasks without
    guidance) with the ``sampling`` fields laid over it (``{"local": "pnar", "pnar_steps": 2}``),
    through the ``local`` decoder ("ar" or "pnar"; None: the preset's or ``sampling``'s). Attribute
    accuracies are over ``samples`` generated images per row. The seam score is the mean over
    ``wide_canvases`` unconditional canvases ``wide_patches`` patches wide (seeds ``seed`` on);
    Block-FID compares the blocks of all of them with those of twice as many true renders of the
    same size.
    """
    import time

    from streamgen.codecs.neural import NeuralCodec
    from streamgen.errors import bad

    for name, value, least in (("wide_canvases", wide_canvases, 1), ("samples", samples, 1), ("frames", frames, 2),
                               ("drift_videos", drift_videos, 1), ("wide_patches", wide_patches, 1)):
        if value < least:
            raise bad(name, f"must be at least {least}", value)
    if drift_frames and drift_frames < 8:
        raise bad("drift_frames", "must be 0 (no drift row) or at least 8 (it reads the first and the last 8 "
                  "frames)", drift_frames)

    res = _Figures(log)
    from streamgen.config import SamplingConfig, parse

    given = dict(sampling or {}, **({} if local is None else {"local": local}))
    sampling = dict(engine.preset, **given)
    engine.check_settings(parse(SamplingConfig, sampling, prefix="sampling"))  # fails now, not an hour in
    unguided = dict(sampling, guidance=1.0)
    clf = AttributeClassifier.fit(size=size)
    n_fakes = max(samples, 8)  # FID's generated images; the true renders are at least twice as many
    gt, gt_labels = render_set(size, max(4, -(-2 * n_fakes // 18)), seed=seed + 7)  # 18 combinations
    gt_pred = clf.predict(gt)
    for a in ("sky", "terrain"):
        res[f"classifier {a} accuracy on ground truth"] = float((gt_pred[a] == gt_labels[a]).float().mean())

    if isinstance(engine.codec, NeuralCodec):
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        pick = np.linspace(0, len(gt) - 1, 24).round().astype(int)  # 24 renders, every combination
        x = torch.from_numpy(gt[pick])
        rec = engine.codec.decode(engine.codec.encode(x))
        p, t = rec.permute(0, 3, 1, 2).float() / 255, x.permute(0, 3, 1, 2).float() / 255
        res["codec PSNR dB (landscapes)"] = float(peak_signal_noise_ratio(p, t, data_range=1.0))
        res["codec SSIM (landscapes)"] = float(structural_similarity_index_measure(p, t, data_range=1.0))
        # the codec never trained on the held-out combinations either: the reader on its reconstructions
        # of them is what a vision decoder giving the codec's own tokens of true renders would score
        held, held_labels = render_set(size, 10, seed=seed + 11, split="heldout")
        held_rec = engine.codec.decode(engine.codec.encode(torch.from_numpy(held)))
        for label, images, labels in (("", rec, {a: v[pick] for a, v in gt_labels.items()}),
                                      (" (held-out combinations)", held_rec, held_labels)):
            pred = clf.predict(images.numpy())
            for a in ("sky", "terrain"):
                res[f"classifier {a} accuracy on codec reconstructions{label}"] = float(
                    (pred[a] == labels[a]).float().mean())
        if engine.codec.pg is not None:
            errs = []
            for k, motion in enumerate(("pan left", "pan right", "still") * 2):
                scene = L.sample_scene(seed * 31 + k, split="heldout")
                scene = L.Scene(scene.sky, scene.terrain, scene.lake, motion, scene.seed)
                clip = torch.from_numpy(L.render(scene, size, size, frames=16, speed=engine.codec.factor))
                errs.append(temporal_errors(engine.codec, clip))
            res["temporal error, plain decoder (grey levels)"] = float(np.mean([e[0] for e in errs]))
            res["temporal error, pixel-guided decoder chained"] = float(np.mean([e[1] for e in errs]))

    def held_out_words(scene: L.Scene, i: int, video: bool) -> str:
        """A caption in words training never used (`captions.describe`'s eval split)."""
        import random

        from streamgen.training.data import captions

        return captions.describe(scene, random.Random(seed * 7919 + i), split="eval", video=video)

    def accuracy(split: str, wording: str) -> tuple[float, float, float]:
        """Shares of images with the right sky, the right terrain, and both."""
        ok_sky = ok_terrain = ok_both = 0
        for i in range(samples):
            scene = L.sample_scene(seed * 1000 + i, split=split)
            prompt = {"templates": lambda: L.caption(scene, variant=i, video=False),
                      "unseen": lambda: unseen_caption(scene, i),
                      "held-out words": lambda: held_out_words(scene, i, False)}[wording]()
            img = next(engine.run("t2i", prompt=prompt, height=size, width=size, seed=seed + i,
                                  sampling=sampling))
            pred = clf.predict(img[None])
            sky = int(pred["sky"][0]) == L.ATTRIBUTES["sky"].index(scene.sky)
            terrain = int(pred["terrain"][0]) == L.ATTRIBUTES["terrain"].index(scene.terrain)
            ok_sky, ok_terrain, ok_both = ok_sky + sky, ok_terrain + terrain, ok_both + (sky and terrain)
        return ok_sky / samples, ok_terrain / samples, ok_both / samples

    if engine.model.cfg.text_dim is not None:
        t0 = time.perf_counter()
        for split, wording, label in (("train", "templates", "training combinations"),
                                      ("heldout", "templates", "held-out combinations"),
                                      ("heldout", "unseen", "held-out combinations, unseen wordings"),
                                      ("heldout", "held-out words", "held-out combinations, held-out words")):
            sky, terrain, both = accuracy(split, wording)
            res[f"sky accuracy ({label})"] = sky
            res[f"terrain accuracy ({label})"] = terrain
            res[f"sky+terrain right ({label})"] = both
        res[f"t2i images per second ({size}x{size}, guided)"] = 4 * samples / (time.perf_counter() - t0)
        for split, label in (("all", "camera-motion accuracy"),
                             ("heldout", "camera-motion accuracy (held-out combinations, held-out words)")):
            ok = 0
            for i in range(samples):
                scene = L.sample_scene(seed * 2000 + i, split=split)
                prompt = L.caption(scene, variant=i, video=True) if split == "all" else held_out_words(scene, i, True)
                clip = np.stack(list(engine.run("t2v", prompt=prompt, height=size, width=size, frames=frames,
                                                seed=seed + i, sampling=sampling)))
                ok += camera_motion(clip) == scene.motion
            res[label] = ok / samples
        if drift_frames:
            hits = {"first": [], "last": []}
            for k in range(drift_videos):
                scene = L.sample_scene(seed + 99 + k, split="train")
                prompt = L.caption(scene, k, video=True)
                keep = {}
                stream = engine.run("t2v", prompt=prompt, height=size, width=size, frames=drift_frames,
                                    seed=seed + k, sampling=sampling)
                for i, f in enumerate(stream):
                    if i < 8 or i >= drift_frames - 8:
                        keep[i] = f
                for part, idx in (("first", range(8)), ("last", range(drift_frames - 8, drift_frames))):
                    pred = clf.predict(np.stack([keep[i] for i in idx]))
                    for a in ("sky", "terrain"):
                        want = L.ATTRIBUTES[a].index(getattr(scene, a))
                        hits[part] += (pred[a] == want).tolist()
            res["drift: sky+terrain accuracy, first 8 frames"] = float(np.mean(hits["first"]))
            res[f"drift: sky+terrain accuracy, frames {drift_frames - 8}-{drift_frames - 1}"] = float(
                np.mean(hits["last"]))

    patch_px = engine.codec.factor * engine.model.cfg.patch_w
    canvases = [next(engine.run("uig", height=size, width=wide_patches * patch_px, seed=seed + k,
                                sampling=unguided)) for k in range(wide_canvases)]
    res[f"seam score ({wide_patches} patches wide, mean of {wide_canvases} canvases)"] = float(
        np.mean([seam_score(c, patch_px) for c in canvases]))
    wide = np.stack(canvases)
    wide_real = np.stack([L.render(L.sample_scene(seed + 5 + k), size, wide.shape[2])[0]
                          for k in range(2 * wide_canvases)])
    if isinstance(engine.codec, NeuralCodec):  # what a perfect model would score through this codec
        rec = engine.codec.decode(engine.codec.encode(torch.from_numpy(wide_real))).numpy()
        res["seam score of codec reconstructions of true renders"] = float(np.mean([seam_score(r, patch_px)
                                                                                    for r in rec]))

    extractor = CodecFeatures(engine.codec) if isinstance(engine.codec, NeuralCodec) else BandFeatures()
    fakes = [next(engine.run("uig", height=size, width=size, seed=seed + 100 + i, sampling=unguided))
             for i in range(n_fakes)]
    reals = gt
    res["FID (own features, not comparable with published figures)"] = fid(
        torch.from_numpy(reals), torch.from_numpy(np.stack(fakes)), extractor)
    block = min(64, size // 2)
    res[f"Block-FID over {block} px blocks of the wide canvases"] = block_fid(
        torch.from_numpy(wide_real), torch.from_numpy(wide), extractor, block)
    return dict(res)

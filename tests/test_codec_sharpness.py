"""The metric functions of benchmarks/codec_sharpness.py on inputs whose answers are known."""
import importlib.util
import math
import pathlib

import pytest
import torch

SPEC = importlib.util.spec_from_file_location(
    "codec_sharpness", pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "codec_sharpness.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def image(seed=0, n=2, size=32):
    return torch.randint(0, 256, (n, size, size, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def blur(x, k=5):
    y = torch.nn.functional.avg_pool2d(x.permute(0, 3, 1, 2).float(), k, 1, k // 2, count_include_pad=False)
    return y.round().to(torch.uint8).permute(0, 2, 3, 1)


def test_gradient_energy_of_a_step_and_of_a_flat_image():
    x = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    assert bench.grad_energy(x) == 0
    x[:, :, 2:] = 10  # one of the three column differences is 10; no row differences
    assert bench.grad_energy(x) == pytest.approx(100 / 3)
    assert bench.grad_energy(x.transpose(1, 2)) == pytest.approx(100 / 3)


def test_sharpness_ratio_is_one_for_the_truth_and_below_one_for_a_blur():
    x = image()
    assert bench.sharpness(x, x) == 1.0
    assert bench.sharpness(blur(x), x) < 0.2  # noise loses most of its gradient energy
    assert bench.sharpness(blur(x, 3), x) > bench.sharpness(blur(x, 5), x)
    assert bench.sharpness(x, blur(x)) > 1  # sharper than the truth: above 1


def test_psnr_ssim_and_temporal_error_on_known_inputs():
    x = image() // 2
    p, s = bench.psnr_ssim(x, x)
    assert p > 90 and s == pytest.approx(1.0)
    off = x + 4  # every pixel 4 grey levels off: MSE 16
    assert bench.psnr_ssim(off, x)[0] == pytest.approx(10 * math.log10(255 ** 2 / 16), abs=1e-3)
    assert bench.psnr_ssim(off, x)[0] < bench.psnr_ssim(x, x)[0]
    clip = image(n=4)
    assert bench.temporal_error(clip, clip) == 0
    assert bench.temporal_error(off.repeat(2, 1, 1, 1), x.repeat(2, 1, 1, 1)) == 0  # a constant error: no flicker
    frozen = clip[:1].repeat(4, 1, 1, 1)  # decoding that never changes while the truth does
    true_change = (clip[1:].float() - clip[:-1].float()).abs().mean()
    assert bench.temporal_error(frozen, clip) == pytest.approx(float(true_change))


def test_each_codec_draws_the_tokens_of_its_own_encoder(tmp_path):
    from streamgen import checkpoint as ckpt
    from streamgen.codecs import CodecConfig, PixelGuidedDecoder, VQGAN
    from streamgen.errors import ConfigError

    cfg = CodecConfig(factor=8, codebook_size=16, code_dim=8, channels=(8, 8, 16, 16))
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        torch.manual_seed(seed)
        vq = VQGAN(cfg)
        ckpt.save(tmp_path / name / "vqgan.safetensors", vq, cfg)
        ckpt.save(tmp_path / name / "pg.safetensors", PixelGuidedDecoder.from_vqgan(vq), cfg)
    assert bench.shares_tokens([tmp_path / "a", tmp_path / "b"])
    assert not bench.shares_tokens([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match="`codecs` must be folders holding vqgan.safetensors"):
        bench.shares_tokens([tmp_path / "a", tmp_path / "d"])
    a, c = bench.load(tmp_path / "a"), bench.load(tmp_path / "c")
    x = image(size=32)
    assert not torch.equal(a.encode(x), c.encode(x))  # two encoders, two token grids
    assert torch.equal(bench.reconstruct(c, x), c.decode(c.encode(x)))
    assert not torch.equal(bench.reconstruct(c, x), c.decode(a.encode(x)))

import json

import pytest
import torch

from streamgen import ConfigError, StreamgenError
from streamgen import checkpoint as ckpt
from streamgen.codecs import CodecConfig, NeuralCodec, PaletteCodec, PixelGuidedDecoder, VQGAN
from streamgen.codecs.vqgan import to_pixels

TINY = dict(factor=8, codebook_size=16, code_dim=8, channels=(8, 8, 16, 16))


@pytest.fixture
def codec():
    torch.manual_seed(0)
    vq = VQGAN(CodecConfig(**TINY))
    return NeuralCodec(vq, PixelGuidedDecoder.from_vqgan(vq))


def frames(b=2, h=32, w=48):
    return torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8)


def test_encode_decode_shapes(codec):
    tok = codec.encode(frames())
    assert tok.shape == (2, 4, 6) and tok.dtype == torch.long
    assert 0 <= int(tok.min()) and int(tok.max()) < 16
    out = codec.decode(tok)
    assert out.shape == (2, 32, 48, 3) and out.dtype == torch.uint8


def test_untrained_pixel_guide_adds_nothing_and_a_trained_one_does(codec):
    tok = codec.encode(frames())
    prev = frames()
    assert torch.equal(codec.decode(tok, prev), codec.decode(tok))
    with torch.no_grad():
        for o in codec.pg.guide.outs:
            o.bias.fill_(0.5)
    assert not torch.equal(codec.decode(tok, prev), codec.decode(tok))


def test_quantizer_restarts_dead_codes():
    cfg = CodecConfig(**{**TINY, "dead_after": 2})
    vq = VQGAN(cfg).train()
    x = to_pixels(frames(4, 32, 32))
    before = vq.quantizer.codebook.clone()
    for _ in range(3):
        vq(x)
    changed = (vq.quantizer.codebook - before).abs().sum(-1) > 0
    assert changed.sum() > 0
    assert (vq.quantizer.unused_for < 2).all()


@pytest.mark.parametrize("bad_frames,match", [
    (torch.zeros(1, 32, 32, 3), "uint8"),
    (torch.zeros(32, 32, 3, dtype=torch.uint8), r"\(B, H, W, 3\)"),
    (torch.zeros(1, 30, 32, 3, dtype=torch.uint8), "multiples of the codec's factor 8"),
])
def test_bad_frames(codec, bad_frames, match):
    with pytest.raises(ConfigError, match=match):
        codec.encode(bad_frames)


def test_bad_tokens_and_prev(codec):
    with pytest.raises(ConfigError, match=r"`tokens` must lie in \[0, 16\)"):
        codec.decode(torch.full((1, 2, 2), 99))
    with pytest.raises(ConfigError, match="`prev` must be the previous frame"):
        codec.decode(torch.zeros(1, 2, 2, dtype=torch.long), frames(1, 32, 32))


def test_checkpoint_round_trip_and_refusals(codec, tmp_path):
    path = tmp_path / "vq.safetensors"
    ckpt.save(path, codec.vq, codec.cfg)
    ckpt.save(tmp_path / "pg.safetensors", codec.pg, codec.cfg)
    again = NeuralCodec.load(path, tmp_path / "pg.safetensors")
    x = frames()
    assert torch.equal(again.encode(x), codec.encode(x))

    with pytest.raises(StreamgenError, match="does not exist"):
        NeuralCodec.load(tmp_path / "missing.safetensors")
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(path.read_bytes()[:100])
    (tmp_path / "trunc.json").write_text((tmp_path / "vq.json").read_text())
    with pytest.raises(StreamgenError, match="not a readable safetensors file"):
        NeuralCodec.load(trunc)
    pickled = tmp_path / "pickle.safetensors"
    pickled.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle header is refused, never loaded
    (tmp_path / "pickle.json").write_text((tmp_path / "vq.json").read_text())
    with pytest.raises(StreamgenError, match="not a readable safetensors file"):
        NeuralCodec.load(pickled)
    # config says 32 codes, weights hold 16: the first mismatched tensor and both shapes are named
    info = json.loads((tmp_path / "vq.json").read_text())
    info["config"]["codebook_size"] = 32
    (tmp_path / "vq.json").write_text(json.dumps(info))
    with pytest.raises(StreamgenError, match=r"tensor `quantizer.codebook` has shape \(16, 8\) but the "
                                             r"model expects \(32, 8\)"):
        NeuralCodec.load(path)


def test_palette_codec_round_trip():
    pal = PaletteCodec(8, factor=4)
    tok = torch.randint(0, 8, (1, 3, 5))
    assert torch.equal(pal.encode(pal.decode(tok)), tok)


def test_mid_blocks_add_residual_blocks_at_the_token_grid_and_old_checkpoints_still_load(tmp_path):
    one, three = VQGAN(CodecConfig(**TINY)), VQGAN(CodecConfig(**TINY, mid_blocks=3))
    for part in ("encoder", "decoder"):
        assert len(getattr(one, part).mid_more) == 0 and len(getattr(three, part).mid_more) == 2
    x = to_pixels(frames(1, 32, 32))
    with torch.no_grad():
        q = three.quantizer.lookup(three.quantizer.indices(three.encoder(x)))
        before = three.decoder(q)
        for blk in three.decoder.mid_more:  # the decoder's blocks at the grid are on its path
            blk.c2.weight.add_(0.5)
        after = three.decoder(q)
    assert before.shape == (1, 3, 32, 32) and not torch.allclose(before, after)
    # a checkpoint of the one-block shape (every checkpoint before mid_blocks) loads unchanged
    path = tmp_path / "vqgan.safetensors"
    ckpt.save(path, one, one.cfg, {})
    again = NeuralCodec.load(path)
    assert again.cfg.mid_blocks == 1
    tok = torch.randint(0, 16, (1, 4, 4))
    assert torch.equal(again.decode(tok), NeuralCodec(one).decode(tok))

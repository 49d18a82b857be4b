"""Copy trained checkpoints into a model folder (by default the package's shipped weights) with
model cards.

    python scripts/export_bundle.py --codec runs/codec --model runs/model --out streamgen/weights

Writes model.safetensors, vqgan.safetensors, pg.safetensors, their JSON configs (model.json with
the model's sampling preset if --sampling gives one), a model card for each (model.md, vqgan.md,
pg.md: the card in --cards DIR/<name>.md as it is, or else what the checkpoint's record says:
steps, size, config, preset), and an index MODEL_CARD.md.
Optimizer state is dropped: only weights are shipped.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from streamgen import checkpoint as ckpt
from streamgen.config import DEFAULT_SAMPLING, SamplingConfig, parse
from streamgen.errors import ConfigError


def check_preset(sampling: object, config: dict) -> None:
    """Refuse a preset that is not SamplingConfig fields, or that needs P-NAR on a model without it."""
    if not isinstance(sampling, dict):
        raise ConfigError(f"`--sampling` must be a JSON object of SamplingConfig fields, but got {sampling!r}")
    full = parse(SamplingConfig, {**DEFAULT_SAMPLING, **sampling}, prefix="sampling")
    if (full.refine_borders is not None or full.local == "pnar") and not config.get("pnar"):
        raise ConfigError(f"`--sampling` needs a model trained with pnar for refine_borders or local 'pnar', "
                          f"but got {sampling!r} for a model without it")


def export(src: Path, dst: Path, sampling: dict | None = None) -> dict:
    info = json.loads(ckpt.config_path(src).read_text())
    if sampling is not None:  # the model's own sampling preset (`Engine.preset`), checked before it ships
        check_preset(sampling, info["config"])
        info["sampling"] = sampling
    tensors = {k: v for k, v in ckpt.read(src).items() if not k.startswith("train/")}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst))
    ckpt.config_path(dst).write_text(json.dumps(info, indent=2) + "\n")
    return {"file": dst.name, "steps": info.get("steps"), "bytes": dst.stat().st_size,
            "train_seconds": info.get("train_seconds"), "cpu_seconds": info.get("cpu_seconds"),
            "config": info["config"], "sampling": info.get("sampling")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", default="runs/codec")
    ap.add_argument("--model", default="runs/model")
    ap.add_argument("--out", default="streamgen/weights")
    ap.add_argument("--cards", help="folder with model.md, vqgan.md, pg.md: data, time and metrics of each")
    ap.add_argument("--sampling", help="the model's sampling preset, a JSON object of SamplingConfig fields "
                    "laid over DEFAULT_SAMPLING (written to model.json), e.g. '{\"refine_borders\": 0.6}'")
    args = ap.parse_args()
    out = Path(args.out)
    try:
        sampling = json.loads(args.sampling) if args.sampling else None
    except json.JSONDecodeError as exc:
        ap.error(f"--sampling must be a JSON object, but got {args.sampling!r} ({exc})")
    try:  # the model first: a preset it cannot run stops the export before anything is written
        rows = [export(Path(args.model) / "model.safetensors", out / "model.safetensors", sampling)]
    except ConfigError as exc:
        ap.error(str(exc))
    rows.append(export(Path(args.codec) / "vqgan.safetensors", out / "vqgan.safetensors"))
    if (Path(args.codec) / "pg.safetensors").exists():
        rows.append(export(Path(args.codec) / "pg.safetensors", out / "pg.safetensors"))
    index = ["# streamgen default model", "", "| file | training steps | size | card |", "|---|---|---|---|"]
    for r in rows:
        name = r["file"].removesuffix(".safetensors")
        card = [f"# {r['file']}", "", f"- training steps: {r['steps']}", f"- size: {r['bytes'] / 1e6:.1f} MB",
                f"- config: `{json.dumps(r['config'])}`"]
        if r["sampling"] is not None:
            card.append(f"- sampling preset (over DEFAULT_SAMPLING): `{json.dumps(r['sampling'])}`")
        written = Path(args.cards) / f"{name}.md" if args.cards else None
        if written is not None and written.is_file():  # a full card: data, recipe, figures
            card = [written.read_text().strip()]
        (out / f"{name}.md").write_text("\n".join(card) + "\n")
        index.append(f"| {r['file']} | {r['steps']} | {r['bytes'] / 1e6:.1f} MB | [{name}.md]({name}.md) |")
    (out / "MODEL_CARD.md").write_text("\n".join(index) + "\n")
    print(f"exported {len(rows)} checkpoints to {out} ({sum(r['bytes'] for r in rows) / 1e6:.1f} MB)")
    if shutil.which("git"):
        print("remember: the shipped total must stay under 100 MB")


if __name__ == "__main__":
    main()

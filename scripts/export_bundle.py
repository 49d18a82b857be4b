"""Copy trained checkpoints into a model folder (by default the package's shipped weights) with
model cards.

    python scripts/export_bundle.py --codec runs/codec --model runs/model --out streamgen/weights

Writes model.safetensors, vqgan.safetensors, pg.safetensors, their JSON configs, and MODEL_CARD.md
holding what the checkpoints' records say (steps) plus the figures passed with --card-notes (a text
file with the data, time and metrics). Optimizer state is dropped: only weights are shipped.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from streamgen import checkpoint as ckpt


def export(src: Path, dst: Path) -> dict:
    tensors = {k: v for k, v in ckpt.read(src).items() if not k.startswith("train/")}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst))
    info = json.loads(ckpt.config_path(src).read_text())
    ckpt.config_path(dst).write_text(json.dumps(info, indent=2) + "\n")
    return {"file": dst.name, "steps": info.get("steps"), "bytes": dst.stat().st_size,
            "config": info["config"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", default="runs/codec")
    ap.add_argument("--model", default="runs/model")
    ap.add_argument("--out", default="streamgen/weights")
    ap.add_argument("--card-notes", help="a text file with data, time and metrics for the model card")
    args = ap.parse_args()
    out = Path(args.out)
    rows = [export(Path(args.model) / "model.safetensors", out / "model.safetensors"),
            export(Path(args.codec) / "vqgan.safetensors", out / "vqgan.safetensors")]
    if (Path(args.codec) / "pg.safetensors").exists():
        rows.append(export(Path(args.codec) / "pg.safetensors", out / "pg.safetensors"))
    card = ["# streamgen default model", "", "| file | training steps | size | config |", "|---|---|---|---|"]
    for r in rows:
        card.append(f"| {r['file']} | {r['steps']} | {r['bytes'] / 1e6:.1f} MB | `{json.dumps(r['config'])}` |")
    if args.card_notes:
        card += ["", Path(args.card_notes).read_text()]
    (out / "MODEL_CARD.md").write_text("\n".join(card) + "\n")
    print(f"exported {len(rows)} checkpoints to {out} ({sum(r['bytes'] for r in rows) / 1e6:.1f} MB)")
    if shutil.which("git"):
        print("remember: the shipped total must stay under 100 MB")


if __name__ == "__main__":
    main()

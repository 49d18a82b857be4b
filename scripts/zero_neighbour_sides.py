"""Make a `neighbours` vision decoder ignore the tokens across some of a patch's borders.

    python scripts/zero_neighbour_sides.py runs/nba/model.safetensors OUT/model.safetensors --sides top bottom

Sets the rows of `nbr_emb` for the given sides (left, right, top, bottom) to zero. With a zero 'none'
row (`keep_none_hints` training), a zero side reads exactly as 'no neighbour made' there: the decoder
then takes the border tokens left and right of a patch and computes as before above and below it.
Session 14 made the shipped decoder this way from the border-token adapter (`runs/nba`, step 2,400):
with the tokens above and below, held-out terrain fell 7.7 points; without them it did not
(RESULTS.md). The JSON config is copied beside the output.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import save_file

from streamgen import checkpoint as ckpt

SIDES = ("left", "right", "top", "bottom")  # the order of `VisionDecoder.neighbour_index`


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--sides", nargs="+", choices=SIDES, required=True)
    args = ap.parse_args()
    tensors = dict(ckpt.read(args.src))
    if "nbr_emb" not in tensors:
        ap.error(f"{args.src} has no nbr_emb: not a `neighbours` model")
    table = tensors["nbr_emb"].clone()
    none = table.shape[1] - 1
    if table[:, none].abs().sum() != 0:
        ap.error(f"{args.src}: the 'none' row of nbr_emb is not zero, so a zeroed side would not read "
                 "as 'no neighbour' (train with keep_none_hints=true)")
    for side in args.sides:
        table[SIDES.index(side)] = 0
    tensors["nbr_emb"] = table
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.dst))
    info = json.loads(ckpt.config_path(args.src).read_text())
    info["zeroed_neighbour_sides"] = list(args.sides)
    ckpt.config_path(args.dst).write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.dst}: nbr_emb rows of {', '.join(args.sides)} set to zero")


if __name__ == "__main__":
    main()

"""How far to trust `streamgen eval`'s attribute reader: its accuracy on labelled frames that look like
generated ones.

    python benchmarks/reader_check.py [--model DIR]

For two readers, one fitted on sharp renders alone (the reader up to session 10) and the one
`streamgen eval` uses now (sharp, blurred and noisy views of the renders, `READER_VIEWS`), it prints
the sky and terrain accuracy on fresh renders of every sky x terrain x lake combination (`render_set`,
another seed than the readers'):
- as rendered, blurred by 2, 4 and 8, and with noise of sigma 16 (`degrade`);
- through the bundle's codec (encode, decode): a perfect vision decoder's frames;
- through the codec with 10% and 25% of the tokens replaced by random ones: frames with the kind of
  errors a generating model makes, whose true attributes are still known.
A generated frame reaches the reader through the codec, so the reader must read those rows too.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from streamgen.bundle import load_engine
from streamgen.evaluate import AttributeClassifier, degrade, render_set


@torch.inference_mode()
def through_codec(codec, frames: np.ndarray, noise: float, seed: int = 0, chunk: int = 24) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(frames), chunk):
        tokens = codec.encode(torch.from_numpy(frames[i:i + chunk]))
        swap = torch.rand(tokens.shape, generator=g) < noise
        tokens = torch.where(swap, torch.randint(0, codec.vocab_size, tokens.shape, generator=g), tokens)
        out.append(codec.decode(tokens))
    return torch.cat(out).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a bundle folder (default: the shipped bundle)")
    ap.add_argument("--per-combo", type=int, default=4, help="test frames per sky x terrain x lake")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    codec = load_engine(args.model).codec
    frames, labels = render_set(args.size, args.per_combo, seed=777)
    sets = {"renders": frames}
    for k in (2, 4, 8):
        sets[f"renders blurred x{k}"] = degrade(frames, blur=k)
    sets["renders, noise sigma 16"] = degrade(frames, noise=16.0, seed=1)
    for noise in (0.0, 0.1, 0.25):
        sets[f"codec, {noise:.0%} tokens random"] = through_codec(codec, frames, noise)
    print(f"{len(frames)} labelled frames per row, {args.size}x{args.size}; sky / terrain accuracy")
    readers = {"sharp renders only": AttributeClassifier.fit(size=args.size, views=((1, 0.0),)),
               "READER_VIEWS (eval)": AttributeClassifier.fit(size=args.size)}
    print(f"{'':34s}" + "".join(f"{name:>22s}" for name in readers))
    for name, x in sets.items():
        row = []
        for clf in readers.values():
            pred = clf.predict(x)
            sky, terrain = (float((pred[a] == labels[a]).float().mean()) for a in ("sky", "terrain"))
            row.append(f"{sky:.3f} / {terrain:.3f}")
        print(f"{name:34s}" + "".join(f"{r:>22s}" for r in row))


if __name__ == "__main__":
    main()

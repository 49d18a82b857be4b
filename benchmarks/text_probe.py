"""Which text memory lets a reader find the sky, terrain and camera motion of a caption it has never seen?

    python benchmarks/text_probe.py                                   # tokens, phrases2, phrases3, sentence
    python benchmarks/text_probe.py --memories tokens phrases2 --seed 1

For each text memory, a small cross-attention reader (4 learned queries over the memory, then a linear
classifier) is trained for 400 steps to name each attribute from the captions of 2,000 train-split
scenes in training words (`captions.describe(split="train")`), the seen sky/terrain combinations
only. It is then asked about 300 held-out combinations (night over desert dunes, sunset over snowy
mountains), described once in training words and once in the eval's held-out words. The reader is a
stand-in for the vision decoder's cross-attention, minutes instead of hours: a memory whose held-out
rows it reads badly gives the decoder nothing better to learn from.

Memories: ``tokens`` (MiniLM's token states, the ``minilm`` encoder), ``phrasesN`` (sentence
embeddings of N-word windows, the ``minilm-phrases`` encoder at window N), ``sentence`` (the whole
caption's one sentence embedding, what ``model.text_pooled`` adds).
"""
from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from streamgen.text import MiniLMEncoder, MiniLMPhraseEncoder
from streamgen.training.data import captions, landscapes as L
from streamgen.training.model import encode_captions

ATTRIBUTES = ("sky", "terrain", "motion")


class Sentence(MiniLMEncoder):
    def encode(self, prompts):
        return self.sentence(prompts)[:, None], torch.ones(len(prompts), 1, dtype=torch.bool)


def memory(name: str):
    if name == "tokens":
        return MiniLMEncoder()
    if name == "sentence":
        return Sentence()
    if name.startswith("phrases"):
        return MiniLMPhraseEncoder(window=int(name[len("phrases"):]))
    raise SystemExit(f"--memories: unknown memory {name!r} (tokens, sentence, phrasesN)")


class Reader(nn.Module):
    def __init__(self, dim: int, classes: int, queries: int = 4, width: int = 64):
        super().__init__()
        self.k, self.v = nn.Linear(dim, width), nn.Linear(dim, width)
        self.q = nn.Parameter(torch.randn(queries, width) * 0.1)
        self.out = nn.Linear(queries * width, classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = torch.einsum("hd,btd->bht", self.q, self.k(x)) / self.q.shape[1] ** 0.5
        a = a.masked_fill(~mask[:, None], -1e9).softmax(-1)
        return self.out(torch.einsum("bht,btd->bhd", a, self.v(x)).flatten(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memories", nargs="+", default=["tokens", "phrases2", "phrases3", "sentence"])
    ap.add_argument("--seed", type=int, default=0, help="seeds the captions, the held-out scenes and the readers")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    train = [L.sample_scene(i) for i in range(args.train)]
    test = [L.sample_scene(i + 1000 * args.seed, split="heldout") for i in range(args.test)]
    cap_train = [captions.describe(s, rng, split="train", video=True) for s in train]
    cap_eval = [captions.describe(s, random.Random(i * 7919 + args.seed), split="eval", video=True)
                for i, s in enumerate(test)]
    cap_seen = [captions.describe(s, random.Random(i * 7919 + args.seed), split="train", video=True)
                for i, s in enumerate(test)]
    values = {a: sorted({getattr(s, a) for s in train + test}) for a in ATTRIBUTES}

    def labels(scenes, a):
        return torch.tensor([values[a].index(getattr(s, a)) for s in scenes])

    print(f"held-out combinations read right ({args.test} captions each), readers trained on "
          f"{args.train} seen ones; seed {args.seed}")
    print(f"{'memory':<10}" + "".join(f"{a + ' train words':>20}{a + ' held-out words':>23}" for a in ATTRIBUTES))
    for name in args.memories:
        t0 = time.time()
        enc = memory(name)
        x_train, m_train = encode_captions(enc, cap_train, {})
        x_seen, m_seen = encode_captions(enc, cap_seen, {})
        x_eval, m_eval = encode_captions(enc, cap_eval, {})
        torch.manual_seed(args.seed)  # every memory's readers start and draw batches alike
        row = ""
        for a in ATTRIBUTES:
            reader = Reader(x_train.shape[-1], len(values[a]))
            opt = torch.optim.Adam(reader.parameters(), 3e-3)
            y = labels(train, a)
            for _ in range(args.steps):
                i = torch.randint(0, args.train, (64,))
                loss = F.cross_entropy(reader(x_train[i], m_train[i]), y[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                truth = labels(test, a)
                seen = (reader(x_seen, m_seen).argmax(-1) == truth).float().mean().item()
                held = (reader(x_eval, m_eval).argmax(-1) == truth).float().mean().item()
            row += f"{seen:>20.1%}{held:>23.1%}"
        print(f"{name:<10}{row}   ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

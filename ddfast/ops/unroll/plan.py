"""The randomness of one unroll, drawn once and replayed: minibatch indices and augmentation seeds.

Minibatches follow MTT's distill.py: a permutation of the synthetic set is split into chunks of
``batch_size`` and the chunks are taken from the end (``indices_chunks.pop()``); a new permutation is
drawn when they run out. ``batch_size=None`` uses the whole set, in order, at every step. Each step's
augmentation gets its own seed, so the backward pass can hand ``augment`` an identical generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SEED_BOUND = 2**62


@dataclass(frozen=True)
class StepPlan:
    """The randomness of every step: its minibatch (int64 indices into the set; None = the whole set) and the seed
    of the generator its augmentation gets."""

    batches: list[torch.Tensor | None]  # indices per step; None = the whole set
    seeds: list[int]

    def generator(self, step: int, device: torch.device) -> torch.Generator:
        """A fresh generator for the augmentation of ``step`` (the same one on every replay)."""
        return torch.Generator(device=device).manual_seed(self.seeds[step])


def plan_steps(num_images: int, steps: int, batch_size: int | None, generator: torch.Generator | None) -> StepPlan:
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    seeds = torch.randint(0, SEED_BOUND, (steps,), generator=gen, device=gen.device).tolist()
    if batch_size is None:
        return StepPlan([None] * steps, seeds)
    batches, chunks = [], []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.split(torch.randperm(num_images, generator=gen, device=gen.device).cpu(), batch_size))
        batches.append(chunks.pop())
    return StepPlan(batches, seeds)

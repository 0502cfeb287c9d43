"""Faithful re-creation of DM's matching step (Zhao & Bilen, WACV 2023; VICO-UoE/DatasetCondensation,
main_DM.py), written by us from its published semantics: for every class, embed that class's real
batch (no gradient) and its synthetic images with the network's ``embed`` (features before the
classifier), take both means over the batch and add the squared distance of the means. One
embedding forward pair and ~5 small kernels per class. DSA, applied in DM with a shared seed per
class, is left out here: it is benchmarked with its own op."""

from __future__ import annotations

import torch


def class_mean_loss(f_syn_per_class, f_real_per_class) -> torch.Tensor:
    """The distance part alone: per-class feature lists in, DM's summed squared mean distance out."""
    loss = torch.tensor(0.0, device=f_syn_per_class[0].device)
    for f_syn, f_real in zip(f_syn_per_class, f_real_per_class):
        loss = loss + torch.sum((torch.mean(f_real, dim=0) - torch.mean(f_syn, dim=0)) ** 2)
    return loss


def step_loss(embed, x_real_per_class, x_syn_per_class) -> torch.Tensor:
    """DM's class loop: [K, n_real, C, H, W] real and [K, ipc, C, H, W] synthetic images."""
    loss = torch.tensor(0.0, device=x_syn_per_class.device)
    for c in range(x_syn_per_class.shape[0]):
        output_real = embed(x_real_per_class[c]).detach()
        output_syn = embed(x_syn_per_class[c])
        loss = loss + torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
    return loss

"""One outer iteration of DC/DSA, DM and MTT in the structure of their reference code bases
(VICO-UoE/DatasetCondensation main.py / main_DM.py, GeorgeCazenavette/mtt-distillation distill.py),
written by us from their published semantics as the baselines of bench/bench_methods.py: a Python
loop over classes, DSA through the DiffAugment re-creation (per-class seeds, global RNG), DC's
match_loss loop over parameter tensors, DM's per-class means, MTT's create_graph unroll."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import dc_match, dsa_reference, mtt_unroll

STRATEGY = "color_crop_cutout_flip_scale_rotate"


def dc_matching_step(net, real_per_class, syn, ipc: int, optimizer_img, dsa: bool, seed: int) -> float:
    """DC main.py's inner body for one outer loop: per class, the real and synthetic gradients (Siamese
    DSA with a shared seed), match_loss summed over classes, one SGD step on the images."""
    net_params = list(net.parameters())
    loss = torch.tensor(0.0, device=syn.device)
    for c, img_real in enumerate(real_per_class):
        img_syn = syn[c * ipc:(c + 1) * ipc]
        lab_real = torch.full((img_real.shape[0],), c, dtype=torch.long, device=syn.device)
        lab_syn = torch.full((ipc,), c, dtype=torch.long, device=syn.device)
        if dsa:
            img_real = dsa_reference.diff_augment(img_real, STRATEGY, seed=seed + 1000 * c, mode="S")
            img_syn = dsa_reference.diff_augment(img_syn, STRATEGY, seed=seed + 1000 * c, mode="S")
        gw_real = torch.autograd.grad(F.cross_entropy(net(img_real), lab_real), net_params)
        gw_real = [g.detach() for g in gw_real]
        gw_syn = torch.autograd.grad(F.cross_entropy(net(img_syn), lab_syn), net_params, create_graph=True)
        loss = loss + dc_match.match_loss(gw_syn, gw_real, "ours", syn.device)
    optimizer_img.zero_grad()
    loss.backward()
    optimizer_img.step()
    return loss.item()


def dm_step(net, real_per_class, syn, ipc: int, optimizer_img, seed: int) -> float:
    """main_DM.py's iteration body: per class, Siamese DSA, embed real (detached) and synthetic, squared
    distance of the means; one SGD step on the images."""
    for p in net.parameters():
        p.requires_grad_(False)
    loss = torch.tensor(0.0, device=syn.device)
    for c, img_real in enumerate(real_per_class):
        img_syn = syn[c * ipc:(c + 1) * ipc]
        img_real = dsa_reference.diff_augment(img_real, STRATEGY, seed=seed + 1000 * c, mode="S")
        img_syn = dsa_reference.diff_augment(img_syn, STRATEGY, seed=seed + 1000 * c, mode="S")
        output_real = net.embed(img_real).detach()
        output_syn = net.embed(img_syn)
        loss = loss + torch.sum((output_real.mean(0) - output_syn.mean(0)) ** 2)
    optimizer_img.zero_grad()
    loss.backward()
    optimizer_img.step()
    return loss.item()


def mtt_step(fm, start, target, syn, labels, syn_lr, steps: int, optimizer_img, optimizer_lr, seed: int) -> float:
    """distill.py's iteration body: the create_graph unroll over the whole synthetic set with per-image
    DSA at every step, the normalised parameter distance, one SGD step on images and lr."""
    loss = mtt_unroll.unroll_and_match(fm, start, target, syn, labels, syn_lr, steps, syn.shape[0],
                                       torch.Generator().manual_seed(seed),
                                       augment=lambda x: dsa_reference.diff_augment(x, STRATEGY, seed=-1, mode="S"))
    optimizer_img.zero_grad()
    optimizer_lr.zero_grad()
    loss.backward()
    optimizer_img.step()
    optimizer_lr.step()
    return loss.item()

"""One outer iteration of DC/DSA, label-cycle-shifting GM, DM, MTT (and its SeqMatch and AST forks) and DREAM in the structure of their
reference code bases (VICO-UoE/DatasetCondensation main.py / main_DM.py, GeorgeCazenavette/mtt-distillation
distill.py, shqii1j/seqmatch, shenjiyuan123/AST-Alignment-with-Smooth-Expert, lyq312318224/DREAM),
written by us from their published semantics as the baselines of bench/bench_methods.py: a Python
loop over classes, DSA through the DiffAugment re-creation (per-class seeds, global RNG), DC's
match_loss loop over parameter tensors, DM's per-class means, MTT's create_graph unroll."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import dc_match, dsa_reference, mtt_unroll, sre2l_bn_loop

STRATEGY = "color_crop_cutout_flip_scale_rotate"


def dc_matching_step(net, real_per_class, syn, ipc: int, optimizer_img, dsa: bool, seed: int, *, shift: int = 0,
                     dm_weight: float = 0.0) -> float:
    """DC main.py's inner body for one outer loop: per class, the real and synthetic gradients (Siamese
    DSA with a shared seed), match_loss summed over classes, one SGD step on the images. Label-cycle-shifting
    GM's round in the same structure: class c's gradients under label (c + ``shift``) mod K, plus ``dm_weight``
    times DM's squared distance of the class's embedding means."""
    net_params = list(net.parameters())
    loss = torch.tensor(0.0, device=syn.device)
    for c, img_real in enumerate(real_per_class):
        img_syn = syn[c * ipc:(c + 1) * ipc]
        label = (c + shift) % len(real_per_class)
        lab_real = torch.full((img_real.shape[0],), label, dtype=torch.long, device=syn.device)
        lab_syn = torch.full((ipc,), label, dtype=torch.long, device=syn.device)
        if dsa:
            img_real = dsa_reference.diff_augment(img_real, STRATEGY, seed=seed + 1000 * c, mode="S")
            img_syn = dsa_reference.diff_augment(img_syn, STRATEGY, seed=seed + 1000 * c, mode="S")
        gw_real = torch.autograd.grad(F.cross_entropy(net(img_real), lab_real), net_params)
        gw_real = [g.detach() for g in gw_real]
        gw_syn = torch.autograd.grad(F.cross_entropy(net(img_syn), lab_syn), net_params, create_graph=True)
        loss = loss + dc_match.match_loss(gw_syn, gw_real, "ours", syn.device)
        if dm_weight:
            mean_real = net.embed(img_real).detach().mean(0)
            loss = loss + dm_weight * torch.sum((mean_real - net.embed(img_syn).mean(0)) ** 2)
    optimizer_img.zero_grad()
    loss.backward()
    optimizer_img.step()
    return loss.item()


def dc_iteration(net, sample_real, syn, ipc: int, optimizer_img, *, outer_loop: int, inner_loop: int,
                 batch_train: int, lr_net: float, dsa: bool, seed: int) -> float:
    """One outer iteration of DC main.py: ``outer_loop`` times the matching step (:func:`dc_matching_step` on
    ``sample_real(ol)``, a list of per-class real batches), then, except after the last, ``inner_loop`` epochs
    of the network on the synthetic set (DC's epoch('train') with per-image DiffAugment when ``dsa``)."""
    net_optimizer = torch.optim.SGD(net.parameters(), lr=lr_net)
    labels = torch.arange(len(syn) // ipc, device=syn.device).repeat_interleave(ipc)
    total = 0.0
    for ol in range(outer_loop):
        total += dc_matching_step(net, sample_real(ol), syn, ipc, optimizer_img, dsa, seed + ol)
        if ol == outer_loop - 1:
            break
        for _ in range(inner_loop):
            _train_epoch(net, net_optimizer, syn.detach().clone(), labels, batch_train, STRATEGY if dsa else "")
    return total


def dc_evaluate(net, images, labels, test_images, test_labels, *, epochs: int, lr: float = 0.01,
                batch_size: int = 256) -> float:
    """DC's evaluate_synset: SGD momentum 0.9, weight decay 5e-4, lr x 0.1 from epoch epochs // 2 (a new
    optimiser), DC's epoch('train') with per-image DiffAugment, then the test accuracy in batches of 256."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    for epoch in range(epochs):
        if epoch == epochs // 2:
            optimizer = torch.optim.SGD(net.parameters(), lr=lr * 0.1, momentum=0.9, weight_decay=5e-4)
        _train_epoch(net, optimizer, images, labels, batch_size, STRATEGY)
    net.eval()
    correct = 0
    with torch.no_grad():
        for x, y in zip(torch.split(test_images, 256), torch.split(test_labels, 256)):
            correct += int((net(x).argmax(1) == y).sum())
    return correct / len(test_labels)


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


def mtt_step(fm, start, target, syn, labels, syn_lr, steps: int, optimizer_img, optimizer_lr, seed: int, *,
             frozen=None, frozen_labels=None, batch_syn: int | None = None, perturb: float = 0.0,
             **options) -> float:
    """distill.py's iteration body: the create_graph unroll with per-image DSA at every step, the normalised
    parameter distance, one SGD step on images and lr. SeqMatch's seqmatch-mtt distill_eval_new.py: the
    ``frozen`` earlier subsets concatenated in front of ``syn``, minibatches of ``batch_syn`` drawn from the
    concatenation. AST's distill.py: ``perturb`` (each 4-D weight W += perturb * D / ||D|| * W before the
    unroll, that start in every denominator) and ``options`` (momentum, loss_scale, middle targets: see
    :func:`mtt_unroll.unroll_and_match`)."""
    images = syn if frozen is None else torch.cat([frozen, syn])
    all_labels = labels if frozen is None else torch.cat([frozen_labels, labels])
    if perturb:
        parts = []
        for w in fm.unflatten(start):
            if w.dim() == 4:
                d = torch.randn_like(w)
                w = w + perturb * (d / d.norm()) * w
            parts.append(w.reshape(-1))
        start = torch.cat(parts)
    batch = batch_syn or images.shape[0]
    loss = mtt_unroll.unroll_and_match(fm, start, target, images, all_labels, syn_lr, steps, batch,
                                       torch.Generator().manual_seed(seed),
                                       augment=lambda x: dsa_reference.diff_augment(x, STRATEGY, seed=-1, mode="S"),
                                       **options)
    optimizer_img.zero_grad()
    optimizer_lr.zero_grad()
    loss.backward()
    optimizer_img.step()
    optimizer_lr.step()
    return loss.item()


def _reference_kmeans_query(net, images, k: int, iters: int = 100, tol: float = 1e-4) -> torch.Tensor:
    """DREAM's query for one class (fast_pytorch_kmeans structure): embed the class's images, Lloyd with
    cdist + argmin + index_add until the squared centroid shift is <= tol, then each centroid's nearest
    image. Initial centroids: k random rows (global RNG)."""
    with torch.no_grad():
        feats = net.embed(images)
        cents = feats[torch.randperm(feats.shape[0], device=feats.device)[:k]]
        for _ in range(iters):
            assign = torch.cdist(feats, cents).argmin(1)
            sums = torch.zeros_like(cents).index_add_(0, assign, feats)
            counts = torch.bincount(assign, minlength=k)
            new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], cents)
            shift = float(((new - cents) ** 2).sum())
            cents = new
            if shift <= tol:
                break
        return images[torch.cdist(cents, feats).argmin(1)]


def _train_epoch(net, optimizer, images, labels, batch_size: int, strategy: str) -> None:
    """DC's epoch('train'): shuffled minibatches, per-image DiffAugment (global RNG; none for an empty
    ``strategy``), one SGD step each."""
    net.train()
    order = torch.randperm(images.shape[0], device=images.device)
    for index in torch.split(order, batch_size):
        x = dsa_reference.diff_augment(images[index], strategy, seed=-1, mode="M") if strategy else images[index]
        loss = F.cross_entropy(net(x), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def dream_iteration(net, real_images, real_labels, syn, ipc: int, optimizer_img, *, inner_steps: int, interval: int,
                    batch_real: int, net_samples: int, net_batch: int = 128, pretrain_epochs: int = 1,
                    seed: int = 0) -> float:
    """One DREAM+ outer iteration in the structure of lyq312318224/DREAM (IDC's condense loop): the fresh
    network trained ``pretrain_epochs`` on the real data (batches of ``net_batch``); per inner step and class, every ``interval`` steps a
    k-means query of the class's embeddings (k = batch_real) picks the real batch; Siamese DiffAugment
    'color_crop_cutout' (all families, shared seed); the 'mse' gradient distance over conv weights plus the
    class-mean embedding distance, summed over classes, one image step (DREAM steps once per class: K
    image steps cost more, so summing keeps this baseline conservative); then the network trains on
    ``net_samples`` random real samples."""
    strategy = "color_crop_cutout"
    net_optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    for _ in range(pretrain_epochs):
        _train_epoch(net, net_optimizer, real_images, real_labels, net_batch, strategy)
    params = list(net.parameters())
    classes = int(real_labels.max()) + 1
    per_class = [real_images[real_labels == c] for c in range(classes)]
    total = 0.0
    for inner in range(inner_steps):
        if inner % interval == 0:
            batches = [_reference_kmeans_query(net, x, batch_real) for x in per_class]
        loss = torch.tensor(0.0, device=syn.device)
        for c, img_real in enumerate(batches):
            s = seed + 1000 * c + inner
            img_real = dsa_reference.diff_augment(img_real, strategy, seed=s, mode="M")
            img_syn = dsa_reference.diff_augment(syn[c * ipc:(c + 1) * ipc], strategy, seed=s, mode="M")
            lab_real = torch.full((img_real.shape[0],), c, dtype=torch.long, device=syn.device)
            lab_syn = torch.full((img_syn.shape[0],), c, dtype=torch.long, device=syn.device)
            g_real = torch.autograd.grad(F.cross_entropy(net(img_real), lab_real), params)
            g_syn = torch.autograd.grad(F.cross_entropy(net(img_syn), lab_syn), params, create_graph=True)
            loss = loss + sum(((gs - gr.detach()) ** 2).sum() for gs, gr, p in zip(g_syn, g_real, params)
                              if p.dim() == 4)
            with torch.no_grad():
                mean_real = net.embed(img_real).mean(0)
            loss = loss + ((mean_real - net.embed(img_syn).mean(0)) ** 2).sum()
        optimizer_img.zero_grad()
        loss.backward()
        optimizer_img.step()
        total += loss.item()
        index = torch.randperm(real_images.shape[0], device=real_images.device)[:net_samples]
        _train_epoch(net, net_optimizer, real_images[index], real_labels[index], net_batch, strategy)
    return total / inner_steps


def sre2l_recover_step(teacher, hooks, inputs, labels, optimizer, augment, lr: float, r_bn: float, low, high) -> float:
    """One step of SRe2L's recover loop (``data_synthesis.py``): set the step's lr, augment the batch, forward
    the frozen teacher whose per-layer ``BNFeatureHook`` objects (``hooks``, from :func:`sre2l_bn_loop.install`)
    compute their terms during the forward, CE + r_bn * the weighted hook sum, backward, Adam, clip."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(teacher(augment(inputs)), labels) + r_bn * sre2l_bn_loop.hooks_loss(hooks)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        inputs.data = torch.max(torch.min(inputs, high), low)
    return loss.item()

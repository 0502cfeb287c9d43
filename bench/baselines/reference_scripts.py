"""The outer iterations of DC's main.py (DC/DSA) and main_DM.py (DM) (VICO-UoE/DatasetCondensation) and of MTT's
distill.py (GeorgeCazenavette/mtt-distillation), written by us in those scripts' shape against the helpers they
import, which the caller passes as ``utils``: :data:`REFERENCE_UTILS` (our re-creations of DC's utils: eager
networks, the DiffAugment re-creation of dsa_reference.py, DC's match_loss loop, DC's epoch loop; and MTT's
create_graph inner loop as ``match_trajectory``) or ``ddfast.compat`` (the drop-ins). bench/bench_compat.py times
one against the other: the difference is what a DC or MTT user changes (imports; for MTT one block replaced by one
call)."""

from __future__ import annotations

import copy
import types

import numpy as np
import torch
from torch import nn

from ddfast.compat.dc import ParamDiffAug, TensorDataset
from ddfast.models import ConvNet

from . import dc_match, dsa_reference


def _reference_get_network(model, channel, num_classes, im_size=(32, 32)):
    if model != "ConvNet":
        raise ValueError(f"the reference utils build DC's ConvNet only, got {model!r}")
    return ConvNet(channel, num_classes, im_size=tuple(im_size))  # DC's layers, eager


def _reference_diff_augment(x, strategy="", seed=-1, param=None):
    return dsa_reference.diff_augment(x, strategy, seed=seed, mode=param.aug_mode) if strategy else x


def _reference_match_loss(gw_syn, gw_real, args):
    return dc_match.match_loss(gw_syn, gw_real, args.dis_metric, args.device)


def _reference_epoch(mode, dataloader, net, optimizer, criterion, args, aug):
    """DC's epoch(): per batch DiffAugment when ``aug``, the forward, the loss, numpy accuracy, one step."""
    loss_avg, acc_avg, num_exp = 0.0, 0, 0
    net.train() if mode == "train" else net.eval()
    for datum in dataloader:
        img = datum[0].float().to(args.device)
        if aug:
            img = _reference_diff_augment(img, args.dsa_strategy, param=args.dsa_param)
        lab = datum[1].long().to(args.device)
        output = net(img)
        loss = criterion(output, lab)
        acc_avg += int(np.sum(np.equal(np.argmax(output.cpu().data.numpy(), axis=-1), lab.cpu().data.numpy())))
        loss_avg += loss.item() * lab.shape[0]
        num_exp += lab.shape[0]
        if mode == "train":
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return loss_avg / num_exp, acc_avg / num_exp


def _reference_match_trajectory(student_net, image_syn, label_syn, syn_lr, starting_params, target_params, args):
    """distill.py's block from ``target_params = torch.cat(...)`` to ``grand_loss``: create_graph SGD steps of the
    student on minibatches of torch.randperm chunks (taken from the end), each with unseeded DiffAugment, then
    param_loss / param_dist; every step's graph stays alive until the backward."""
    target_params = torch.cat([p.data.to(args.device).reshape(-1) for p in target_params], 0)
    student_params = [torch.cat([p.data.to(args.device).reshape(-1) for p in starting_params], 0).requires_grad_(True)]
    starting_params = torch.cat([p.data.to(args.device).reshape(-1) for p in starting_params], 0)
    criterion = nn.CrossEntropyLoss().to(args.device)
    indices_chunks = []
    for _ in range(args.syn_steps):
        if not indices_chunks:
            indices_chunks = list(torch.split(torch.randperm(len(image_syn)), args.batch_syn))
        these_indices = indices_chunks.pop()
        x, this_y = image_syn[these_indices], label_syn[these_indices]
        if args.dsa and not args.no_aug:
            x = _reference_diff_augment(x, args.dsa_strategy, param=args.dsa_param)
        ce_loss = criterion(student_net(x, flat_param=student_params[-1]), this_y)
        grad = torch.autograd.grad(ce_loss, student_params[-1], create_graph=True)[0]
        student_params.append(student_params[-1] - syn_lr * grad)
    num_params = starting_params.numel()
    param_loss = torch.nn.functional.mse_loss(student_params[-1], target_params, reduction="sum") / num_params
    param_dist = torch.nn.functional.mse_loss(starting_params, target_params, reduction="sum") / num_params
    return param_loss / param_dist


REFERENCE_UTILS = types.SimpleNamespace(get_network=_reference_get_network, DiffAugment=_reference_diff_augment,
                                        match_loss=_reference_match_loss, epoch=_reference_epoch,
                                        TensorDataset=TensorDataset, ParamDiffAug=ParamDiffAug,
                                        match_trajectory=_reference_match_trajectory)


def dc_iteration(utils, args, get_images, image_syn, label_syn, optimizer_img, seed: int) -> float:
    """One iteration of DC main.py's ``for it in range(args.Iteration + 1)`` body: a fresh network, ``args.outer_loop``
    matching steps (per class: Siamese DiffAugment with one seed, the real gradients, the synthetic gradients with
    create_graph, match_loss), one image step each, and ``args.inner_loop`` epochs of the network on the synthetic
    set between them. DC seeds each class's DiffAugment from the clock; ``seed`` makes it reproducible here."""
    net = utils.get_network(args.model, args.channel, args.num_classes, args.im_size).to(args.device)
    net.train()
    net_parameters = list(net.parameters())
    optimizer_net = torch.optim.SGD(net.parameters(), lr=args.lr_net)
    criterion = nn.CrossEntropyLoss().to(args.device)
    loss_avg = 0.0
    for ol in range(args.outer_loop):
        loss = torch.tensor(0.0).to(args.device)
        for c in range(args.num_classes):
            img_real = get_images(c, args.batch_real)
            lab_real = torch.ones((img_real.shape[0],), device=args.device, dtype=torch.long) * c
            img_syn = image_syn[c * args.ipc:(c + 1) * args.ipc]
            lab_syn = torch.ones((args.ipc,), device=args.device, dtype=torch.long) * c
            if args.dsa:
                img_real = utils.DiffAugment(img_real, args.dsa_strategy, seed=seed + c, param=args.dsa_param)
                img_syn = utils.DiffAugment(img_syn, args.dsa_strategy, seed=seed + c, param=args.dsa_param)
            gw_real = torch.autograd.grad(criterion(net(img_real), lab_real), net_parameters)
            gw_real = list(g.detach().clone() for g in gw_real)
            gw_syn = torch.autograd.grad(criterion(net(img_syn), lab_syn), net_parameters, create_graph=True)
            loss += utils.match_loss(gw_syn, gw_real, args)
        optimizer_img.zero_grad()
        loss.backward()
        optimizer_img.step()
        loss_avg += loss.item()
        if ol == args.outer_loop - 1:
            break
        train = utils.TensorDataset(copy.deepcopy(image_syn.detach()), copy.deepcopy(label_syn.detach()))
        trainloader = torch.utils.data.DataLoader(train, batch_size=args.batch_train, shuffle=True, num_workers=0)
        for _ in range(args.inner_loop):
            utils.epoch("train", trainloader, net, optimizer_net, criterion, args, aug=bool(args.dsa))
    return loss_avg / (args.num_classes * args.outer_loop)


def dm_iteration(utils, args, get_images, image_syn, optimizer_img, seed: int) -> float:
    """One iteration of main_DM.py: a fresh network with frozen parameters, per class Siamese DiffAugment, the
    real embedding (detached) and the synthetic one, the squared distance of their means; one image step."""
    net = utils.get_network(args.model, args.channel, args.num_classes, args.im_size).to(args.device)
    net.train()
    for param in list(net.parameters()):
        param.requires_grad = False
    embed = net.embed
    loss = torch.tensor(0.0).to(args.device)
    for c in range(args.num_classes):
        img_real = get_images(c, args.batch_real)
        img_syn = image_syn[c * args.ipc:(c + 1) * args.ipc]
        if args.dsa:
            img_real = utils.DiffAugment(img_real, args.dsa_strategy, seed=seed + c, param=args.dsa_param)
            img_syn = utils.DiffAugment(img_syn, args.dsa_strategy, seed=seed + c, param=args.dsa_param)
        output_real = embed(img_real).detach()
        output_syn = embed(img_syn)
        loss += torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
    optimizer_img.zero_grad()
    loss.backward()
    optimizer_img.step()
    return loss.item() / args.num_classes


def mtt_iteration(utils, args, student_net, image_syn, label_syn, syn_lr, trajectory, optimizer_img,
                  optimizer_lr) -> float:
    """One iteration of distill.py after the evaluation: an expert trajectory's start and target, the inner loop and
    matching loss (``utils.match_trajectory``), one step on the images and on the learnable lr."""
    grand_loss = utils.match_trajectory(student_net, image_syn, label_syn, syn_lr, trajectory[0],
                                        trajectory[args.expert_epochs], args)
    optimizer_img.zero_grad()
    optimizer_lr.zero_grad()
    grand_loss.backward()
    optimizer_img.step()
    optimizer_lr.step()
    return grand_loss.item()

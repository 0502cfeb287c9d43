"""Faithful re-creation of MTT's inner loop and matching loss (Cazenavette et al., CVPR 2022;
GeorgeCazenavette/mtt-distillation, distill.py), written by us from its published semantics: the
student's flat parameters are appended to a list at every step, each step's cross-entropy gradient is
taken with create_graph=True, and the parameter-matching loss is backpropagated through the whole
chain, so every step's graph stays alive until the backward (memory grows with N x batch_syn). The
student runs on views of the flat vector (MTT's ReparamModule; here torch.func.functional_call)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def unroll_and_match(fm, start, target, images, labels, syn_lr, steps: int, batch_syn: int,
                     generator: torch.Generator, augment=None, *, momentum: float = 0.0, loss_scale: float = 1.0,
                     middle=()) -> torch.Tensor:
    """MTT's param_loss / param_dist after ``steps`` student updates from the expert's ``start``;
    ``augment(x)`` (MTT's unseeded DiffAugment) transforms each step's minibatch when given. AST's fork of
    distill.py (shenjiyuan123/AST-Alignment-with-Smooth-Expert) adds, as options here: heavy-ball
    ``momentum`` (b = momentum * b + grad, params -= syn_lr * b), the balanced loss's ``loss_scale`` on each
    step's cross-entropy, and ``middle`` = [(k, target_k)]: after k steps the same normalised distance to
    target_k is added to the loss."""
    student_params = [start.detach().clone().requires_grad_(True)]
    indices_chunks = []
    velocity = None
    middle = dict(middle)
    loss = 0.0
    for step in range(steps):
        if not indices_chunks:
            indices = torch.randperm(len(images), generator=generator)
            indices_chunks = list(torch.split(indices, batch_syn))
        these_indices = indices_chunks.pop()
        x = images[these_indices]
        if augment is not None:
            x = augment(x)
        y = labels[these_indices]
        output = fm(student_params[-1], x)
        ce_loss = F.cross_entropy(output, y) * loss_scale
        grad = torch.autograd.grad(ce_loss, student_params[-1], create_graph=True)[0]
        velocity = grad if velocity is None or not momentum else momentum * velocity + grad
        student_params.append(student_params[-1] - syn_lr * velocity)
        if step + 1 in middle:
            loss = loss + _distance(student_params[-1], start, middle[step + 1])
    return loss + _distance(student_params[-1], start, target)


def _distance(theta, start, target) -> torch.Tensor:
    param_loss = torch.nn.functional.mse_loss(theta, target, reduction="sum")
    param_dist = torch.nn.functional.mse_loss(start, target, reduction="sum")
    return param_loss / param_dist

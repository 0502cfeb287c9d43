"""Pure-PyTorch MMD: THE specification (docs/semantics.md#mmd).

Squared maximum mean discrepancy between samples x [N, D] and y [M, D] (Gretton et al., "A Kernel
Two-Sample Test", JMLR 2012, eq. 3 (unbiased, MMD^2_u) and eq. 5 (biased, MMD^2_b)):

* ``biased``:   mean_{i,j} k(x_i, x_j) + mean_{i,j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j), all N^2,
  M^2 and N*M pairs, diagonals included;
* ``unbiased``: the xx and yy blocks leave out i = j and divide by N(N-1) and M(M-1).

Kernels (``coefficients`` turns the bandwidths into the per-bandwidth constants below):

* ``gaussian``: k(a, b) = sum_s exp(-||a-b||^2 / (2 s^2))           (c_s = 1 / (2 s^2));
* ``imq``:      k(a, b) = sum_s (1 + ||a-b||^2 / s^2)^(-1/2)          (c_s = 1 / s^2);
* ``linear``:   k(a, b) = <a, b>; the biased estimate is ||mean x - mean y||^2, DM's mean matching
  (Zhao & Bilen, "Dataset Condensation with Distribution Matching"), computed in closed form around
  the means in O((N + M) D) (the unbiased one subtracts each side's spread sum ||x_i - mean_x||^2 /
  (N (N - 1))): the expanded sums of <a, b> would cancel catastrophically for features with a large
  common mean.

Squared distances are ||a||^2 + ||b||^2 - 2 <a, b>, clamped at 0 (what torch.cdist does for large
inputs), and exactly 0 on the diagonal of the xx and yy blocks. The segmented form takes rows grouped by
class: class c owns rows x[x_offsets[c]:x_offsets[c+1]] and y[y_offsets[c]:y_offsets[c+1]], and its
value is the MMD of those rows; a class with no rows on either side gives 0 (a class with 0 rows on
one side is an error that the public function raises unless the caller asked to ignore it).

Values come in the accumulate dtype (fp32 for fp16/bf16/fp32, fp64 for fp64), gradients in the
inputs' dtype. The backward is the closed-form derivative (autograd cannot run inside a custom-op
kernel): with k = f(d^2), dL/dx_i = sum_j c_ij (x_i - z_j) where c_ij = 2 w f'(d_ij^2) and w is the
pair's weight in the estimator (doubled for the symmetric xx and yy blocks), i.e.
grad_x = rowsum(C) * x - C @ z.
"""

from __future__ import annotations

import math

import torch

from .._dtypes import accumulate_dtype

KERNELS = ("gaussian", "imq", "linear")
ESTIMATORS = ("biased", "unbiased")
KERNEL_CODES = {"gaussian": 0, "imq": 1, "linear": 2}


def coefficients(kernel: str, sigmas) -> list[float]:
    """Per-bandwidth constants c_s: gaussian 1/(2 s^2), imq 1/s^2 (none for linear)."""
    if kernel == "gaussian":
        return [1.0 / (2.0 * s * s) for s in sigmas]
    if kernel == "imq":
        return [1.0 / (s * s) for s in sigmas]
    return []


def pair_weights(n: int, m: int, unbiased: bool) -> tuple[float, float, float]:
    """Weights of one xx, yy and xy pair in the estimator (the xy weight counts both cross blocks). A
    side with one row under the unbiased estimator (only reachable when validation is skipped, under
    torch.compile) gets an infinite weight on an empty sum: NaN, as in the compiled backends."""
    def inverse(count):
        return 1.0 / count if count else math.inf

    wxx = inverse(n * (n - 1)) if unbiased else inverse(n * n)
    wyy = inverse(m * (m - 1)) if unbiased else inverse(m * m)
    return wxx, wyy, -2.0 / (n * m)


def _squared_distances(a: torch.Tensor, b: torch.Tensor, same: bool) -> torch.Tensor:
    d2 = (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)
    if same:
        d2.fill_diagonal_(0)
    return d2


def _kernel_and_derivative(d2: torch.Tensor, kernel: str, coefs: list[float]):
    """k = f(d^2) and f'(d^2), summed over bandwidths."""
    value, slope = torch.zeros_like(d2), torch.zeros_like(d2)
    for c in coefs:
        if kernel == "gaussian":
            e = torch.exp(-c * d2)
            value, slope = value + e, slope - c * e
        else:  # imq
            base = 1 + c * d2
            value, slope = value + base.rsqrt(), slope - 0.5 * c * base.rsqrt() / base
    return value, slope


def _segment_ids(offsets: torch.Tensor, rows: int) -> torch.Tensor:
    """Class index of every row (rows grouped by class), without a host synchronisation."""
    counts = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=offsets.device), counts, output_size=rows)


def _class_means(a: torch.Tensor, offsets: torch.Tensor):
    """(row class ids, per-class row counts, per-class means [K, D]) of rows grouped by class."""
    ids = _segment_ids(offsets, a.shape[0])
    counts = (offsets[1:] - offsets[:-1]).to(a.dtype)
    sums = a.new_zeros(counts.numel(), a.shape[1]).index_add_(0, ids, a)
    return ids, counts, sums / counts.clamp(min=1)[:, None]


def _shifted(xa, ya):
    """Both sides minus one common row (the first row of x, else of y): the linear MMD is translation-
    invariant, and sums of the shifted rows keep their digits in fp32 when the features share a large
    mean (sums of rows around 100 lose ~4 digits to rounding)."""
    shift = torch.cat([xa[:1], ya[:1], xa.new_zeros(1, xa.shape[1])])[:1]
    return xa - shift, ya - shift


def linear_forward(xa, ya, xo, yo, unbiased: bool) -> torch.Tensor:
    """Linear-kernel MMD of every class at once ([K]), in closed form around the class means:
    ||mean_x - mean_y||^2, minus for the unbiased estimator sum ||x_i - mean_x||^2 / (n (n - 1)) and the
    same for y. Algebraically the expanded estimator, without its catastrophic cancellation when the
    features share a large mean (DM's regime). O((N + M) D), no class loop, no host synchronisation."""
    xa, ya = _shifted(xa, ya)
    ix, n, mx = _class_means(xa, xo)
    iy, m, my = _class_means(ya, yo)
    value = (mx - my).square().sum(1)
    if unbiased:
        spread_x = xa.new_zeros(n.numel()).index_add_(0, ix, (xa - mx[ix]).square().sum(1))
        spread_y = ya.new_zeros(m.numel()).index_add_(0, iy, (ya - my[iy]).square().sum(1))
        value = value - spread_x / (n * (n - 1)) - spread_y / (m * (m - 1))
    return torch.where((n > 0) & (m > 0), value, 0.0)


def linear_backward(go, xa, ya, xo, yo, unbiased: bool):
    """Gradients of linear_forward weighted by go [K]: d/dx_i = 2 (mean_x - mean_y) / n
    - [unbiased] 2 (x_i - mean_x) / (n (n - 1)), and symmetrically for y."""
    xa, ya = _shifted(xa, ya)
    ix, n, mx = _class_means(xa, xo)
    iy, m, my = _class_means(ya, yo)
    go = torch.where((n > 0) & (m > 0), go, 0.0)
    delta = mx - my
    gx = (2 * go / n.clamp(min=1))[ix, None] * delta[ix]
    gy = (-2 * go / m.clamp(min=1))[iy, None] * delta[iy]
    if unbiased:
        gx = gx - (2 * go / (n * (n - 1)))[ix, None] * (xa - mx[ix])
        gy = gy - (2 * go / (m * (m - 1)))[iy, None] * (ya - my[iy])
    return gx, gy


def _block(a, b, kernel, coefs, same, unbiased):
    """(sum of k over the block's counted pairs, f' matrix with uncounted pairs zeroed)."""
    value, slope = _kernel_and_derivative(_squared_distances(a, b, same), kernel, coefs)
    if same and unbiased:
        value.fill_diagonal_(0)
        slope.fill_diagonal_(0)
    return value.sum(), slope


def offset_tensors(x, y, x_offsets, y_offsets):
    """The segment offsets as int64 tensors on the inputs' device; None means one segment of all rows."""
    if x_offsets is None:
        return (torch.tensor([0, x.shape[0]], dtype=torch.int64, device=x.device),
                torch.tensor([0, y.shape[0]], dtype=torch.int64, device=y.device))
    return x_offsets.contiguous(), y_offsets.contiguous()


def _segments(x, y, x_offsets, y_offsets):
    if x_offsets is None:
        return [(0, x.shape[0], 0, y.shape[0])]
    xo, yo = x_offsets.tolist(), y_offsets.tolist()
    return [(xo[c], xo[c + 1], yo[c], yo[c + 1]) for c in range(len(xo) - 1)]


def _acc(t: torch.Tensor) -> torch.Tensor:
    return t.to(accumulate_dtype(t.dtype))


def forward(x, y, x_offsets, y_offsets, kernel: str, sigmas, estimator: str) -> torch.Tensor:
    """MMD^2 per class ([K]; a 0-d tensor when the offsets are None), in the accumulate dtype."""
    xa, ya = _acc(x), _acc(y)
    unbiased = estimator == "unbiased"
    if kernel == "linear":
        out = linear_forward(xa, ya, *offset_tensors(x, y, x_offsets, y_offsets), unbiased)
        return out.reshape(()) if x_offsets is None else out
    coefs = coefficients(kernel, sigmas)
    values = []
    for x0, x1, y0, y1 in _segments(x, y, x_offsets, y_offsets):
        n, m = x1 - x0, y1 - y0
        xc, yc = xa[x0:x1], ya[y0:y1]
        if n == 0 or m == 0:
            values.append(xa.new_zeros(()))
            continue
        wxx, wyy, wxy = pair_weights(n, m, unbiased)
        sxx, _ = _block(xc, xc, kernel, coefs, True, unbiased)
        syy, _ = _block(yc, yc, kernel, coefs, True, unbiased)
        sxy, _ = _block(xc, yc, kernel, coefs, False, unbiased)
        values.append(wxx * sxx + wyy * syy + wxy * sxy)
    out = torch.stack(values)
    return out.reshape(()) if x_offsets is None else out


def backward(grad_out, x, y, x_offsets, y_offsets, kernel: str, sigmas, estimator: str, need_x: bool,
             need_y: bool):
    """(dL/dx, dL/dy) in the inputs' dtype; an empty tensor where not needed."""
    xa, ya = _acc(x), _acc(y)
    unbiased = estimator == "unbiased"
    go = _acc(grad_out).reshape(-1)
    if kernel == "linear":
        gx, gy = linear_backward(go, xa, ya, *offset_tensors(x, y, x_offsets, y_offsets), unbiased)
    else:
        gx, gy = _kernel_backward(go, xa, ya, x, y, x_offsets, y_offsets, kernel, sigmas, unbiased)
    return (gx.to(x.dtype) if need_x else x.new_empty(0)), (gy.to(y.dtype) if need_y else y.new_empty(0))


def _kernel_backward(go, xa, ya, x, y, x_offsets, y_offsets, kernel: str, sigmas, unbiased: bool):
    """Gradients for the gaussian and imq kernels, one class segment at a time (tensorised blocks)."""
    coefs = coefficients(kernel, sigmas)
    gx, gy = torch.zeros_like(xa), torch.zeros_like(ya)
    for c, (x0, x1, y0, y1) in enumerate(_segments(x, y, x_offsets, y_offsets)):
        n, m = x1 - x0, y1 - y0
        if n == 0 or m == 0:
            continue
        xc, yc = xa[x0:x1], ya[y0:y1]
        wxx, wyy, wxy = (go[c] * w for w in pair_weights(n, m, unbiased))
        _, sxx = _block(xc, xc, kernel, coefs, True, unbiased)
        _, syy = _block(yc, yc, kernel, coefs, True, unbiased)
        _, sxy = _block(xc, yc, kernel, coefs, False, unbiased)
        cxx, cyy, cxy = 4 * wxx * sxx, 4 * wyy * syy, 2 * wxy * sxy  # c_ij of rowsum(C) * a - C @ b
        gx[x0:x1] = cxx.sum(1, keepdim=True) * xc - cxx @ xc + cxy.sum(1, keepdim=True) * xc - cxy @ yc
        gy[y0:y1] = cyy.sum(1, keepdim=True) * yc - cyy @ yc + cxy.sum(0)[:, None] * yc - cxy.T @ xc
    return gx, gy

// C++ CPU kernels of one fused DSA pass (semantics: ddfast/ops/dsa/reference.py, passes: plan.py).
// A pass is [color] [crop|cutout|flip]* [scale|rotate]*: for every output pixel, the bilinear taps of the
// pass's affine (align_corners=False, zero padding) are mapped back through the index maps to an input
// pixel, whose colour transform (per-pixel channel mean, per-image mean from a pre-pass) is computed on
// the fly. Backward: per image, the same taps scatter the gradient into an image-sized buffer (one thread
// per image: deterministic), then the colour adjoint. at::parallel_for over images.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace ddfast {
namespace dsa {
namespace {

constexpr const char* kOp = "dsa";
enum Code : int64_t { kColor = 1, kCrop = 2, kCutout = 3, kFlip = 4, kScale = 5, kRotate = 6 };
// Columns of the parameter table (ddfast/ops/dsa/params.py).
enum Column { kBrightness, kSaturation, kContrast, kCropH, kCropW, kCutH, kCutW, kCutOn, kFlipCol, kScaleX,
              kScaleY, kAngle, kColumns };

struct Pass {
  bool colour = false;
  std::vector<int64_t> index;   // crop / cutout / flip, in application order
  std::vector<int64_t> affine;  // scale / rotate, in application order
};

Pass parse(c10::IntArrayRef ops) {
  Pass p;
  size_t k = 0;
  if (k < ops.size() && ops[k] == kColor) p.colour = true, ++k;
  for (; k < ops.size() && ops[k] >= kCrop && ops[k] <= kFlip; ++k) p.index.push_back(ops[k]);
  for (; k < ops.size() && (ops[k] == kScale || ops[k] == kRotate); ++k) p.affine.push_back(ops[k]);
  TORCH_CHECK(!ops.empty() && k == ops.size(), kOp, ": malformed pass (expected [color] [crop|cutout|flip]* "
              "[scale|rotate]*)");
  return p;
}

// DC's torch.randint over `count` values from the stored uniform (float32 arithmetic, as every backend).
int64_t uniform_to_int(float u, int64_t count) {
  return std::min(static_cast<int64_t>(std::floor(u * static_cast<float>(count))), count - 1);
}

template <typename Acc>
struct Image {
  Acc bright = 0, sat = 1, con = 1;
  int64_t shift_h = 0, shift_w = 0, cut_h0 = 0, cut_w0 = 0, cut_h = 0, cut_w = 0;
  bool cut_on = false, flip = false;
  Acc a00 = 1, a01 = 0, a10 = 0, a11 = 1;  // composite affine (normalized coordinates)

  Image(const float* row, int64_t H, int64_t W, c10::IntArrayRef geo, const Pass& pass) {
    bright = row[kBrightness], sat = row[kSaturation], con = row[kContrast];
    shift_h = uniform_to_int(row[kCropH], 2 * geo[0] + 1) - geo[0];
    shift_w = uniform_to_int(row[kCropW], 2 * geo[1] + 1) - geo[1];
    cut_h = geo[2], cut_w = geo[3];
    cut_h0 = uniform_to_int(row[kCutH], H + 1 - cut_h % 2) - cut_h / 2;
    cut_w0 = uniform_to_int(row[kCutW], W + 1 - cut_w % 2) - cut_w / 2;
    cut_on = row[kCutOn] > 0.5f, flip = row[kFlipCol] > 0.5f;
    for (int64_t code : pass.affine) {  // A <- A * B (sampling point = A1 A2 ... p)
      Acc b00, b01, b10, b11;
      if (code == kScale) {
        b00 = row[kScaleX], b01 = 0, b10 = 0, b11 = row[kScaleY];
      } else {
        const Acc angle = row[kAngle];
        b00 = std::cos(angle), b01 = -std::sin(angle), b10 = std::sin(angle), b11 = std::cos(angle);
      }
      const Acc n00 = a00 * b00 + a01 * b10, n01 = a00 * b01 + a01 * b11;
      const Acc n10 = a10 * b00 + a11 * b10, n11 = a10 * b01 + a11 * b11;
      a00 = n00, a01 = n01, a10 = n10, a11 = n11;
    }
  }

  // Maps a tap of the pass's pre-affine image back to the input pixel (the index maps of the pass, last
  // first); false where the tap is zero (crop fill, cutout square).
  bool source(const Pass& pass, int64_t H, int64_t W, int64_t& i, int64_t& j) const {
    for (auto it = pass.index.rbegin(); it != pass.index.rend(); ++it) {
      if (*it == kCrop) {
        i += shift_h, j += shift_w;
        if (i < 0 || i >= H || j < 0 || j >= W) return false;
      } else if (*it == kCutout) {
        if (cut_on && i >= cut_h0 && i < cut_h0 + cut_h && j >= cut_w0 && j < cut_w0 + cut_w) return false;
      } else if (flip) {
        j = W - 1 - j;
      }
    }
    return true;
  }

  // Calls f(tap_i, tap_j, weight) for the (up to 4) in-image bilinear taps of output pixel (i, j), or the
  // pixel itself with weight 1 when the pass has no affine.
  template <typename F>
  void taps(const Pass& pass, int64_t H, int64_t W, int64_t i, int64_t j, F&& f) const {
    if (pass.affine.empty()) {
      f(i, j, Acc(1));
      return;
    }
    const Acc xn = static_cast<Acc>(2 * j + 1) / static_cast<Acc>(W) - Acc(1);
    const Acc yn = static_cast<Acc>(2 * i + 1) / static_cast<Acc>(H) - Acc(1);
    const Acc gx = a00 * xn + a01 * yn, gy = a10 * xn + a11 * yn;
    const Acc ix = ((gx + Acc(1)) * static_cast<Acc>(W) - Acc(1)) / Acc(2);
    const Acc iy = ((gy + Acc(1)) * static_cast<Acc>(H) - Acc(1)) / Acc(2);
    const Acc fx = std::floor(ix), fy = std::floor(iy);
    if (!(std::isfinite(fx) && std::isfinite(fy))) return;
    const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
    const Acc wx1 = ix - fx, wy1 = iy - fy, wx0 = Acc(1) - wx1, wy0 = Acc(1) - wy1;
    const int64_t ys[2] = {y0, y0 + 1}, xs[2] = {x0, x0 + 1};
    const Acc wys[2] = {wy0, wy1}, wxs[2] = {wx0, wx1};
    for (int a = 0; a < 2; ++a) {
      if (ys[a] < 0 || ys[a] >= H) continue;
      for (int b = 0; b < 2; ++b) {
        if (xs[b] < 0 || xs[b] >= W) continue;
        f(ys[a], xs[b], wys[a] * wxs[b]);
      }
    }
  }
};

void check_inputs(const at::Tensor& x, const at::Tensor& table, const c10::optional<at::Tensor>& row_index,
                  c10::IntArrayRef geometry, const char* name) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), kOp, ": ", name, " must be a contiguous [N, C, H, W] tensor");
  TORCH_CHECK(table.scalar_type() == at::kFloat && table.dim() == 2 && table.size(1) == kColumns &&
                  table.size(0) >= 1 && table.is_contiguous(),
              kOp, ": table must be a contiguous float32 [rows, 12] tensor");
  TORCH_CHECK(geometry.size() == 4, kOp, ": geometry must hold 4 sizes");
  if (row_index.has_value()) {
    const auto& r = *row_index;
    TORCH_CHECK(r.scalar_type() == at::kLong && r.dim() == 1 && r.size(0) == x.size(0) && r.is_contiguous(), kOp,
                ": row_index must be contiguous int64, one per image");
    const int64_t* idx = r.const_data_ptr<int64_t>();
    for (int64_t n = 0; n < r.numel(); ++n)
      TORCH_CHECK(idx[n] >= 0 && idx[n] < table.size(0), kOp, ": row_index holds ", idx[n], ", outside [0, ",
                  table.size(0), ")");
  } else {
    TORCH_CHECK(table.size(0) == 1 || table.size(0) == x.size(0), kOp, ": a table of ", table.size(0),
                " rows needs row_index for ", x.size(0), " images");
  }
}

const float* row_of(const at::Tensor& table, const c10::optional<at::Tensor>& row_index, int64_t n) {
  int64_t r = row_index.has_value() ? row_index->const_data_ptr<int64_t>()[n] : (table.size(0) > 1 ? n : 0);
  return table.const_data_ptr<float>() + r * kColumns;
}

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& out, const at::Tensor& table,
                  const c10::optional<at::Tensor>& row_index, const Pass& pass, c10::IntArrayRef geo) {
  using Acc = at::opmath_type<T>;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), HW = H * W;
  const T* xp = x.const_data_ptr<T>();
  T* op = out.data_ptr<T>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<Acc> value(C), acc(C);
    for (int64_t n = begin; n < end; ++n) {
      const Image<Acc> im(row_of(table, row_index, n), H, W, geo, pass);
      const T* img = xp + n * C * HW;
      Acc mean_all = 0;
      if (pass.colour) {
        for (int64_t k = 0; k < C * HW; ++k) mean_all += static_cast<Acc>(img[k]);
        mean_all = mean_all / static_cast<Acc>(C * HW) + im.bright;  // mean after brightness + saturation
      }
      for (int64_t i = 0; i < H; ++i) {
        for (int64_t j = 0; j < W; ++j) {
          std::fill(acc.begin(), acc.end(), Acc(0));
          im.taps(pass, H, W, i, j, [&](int64_t ti, int64_t tj, Acc w) {
            if (!im.source(pass, H, W, ti, tj)) return;
            const T* px = img + ti * W + tj;
            if (!pass.colour) {
              for (int64_t c = 0; c < C; ++c) acc[c] += w * static_cast<Acc>(px[c * HW]);
              return;
            }
            Acc m = 0;
            for (int64_t c = 0; c < C; ++c) value[c] = static_cast<Acc>(px[c * HW]) + im.bright, m += value[c];
            m /= static_cast<Acc>(C);
            for (int64_t c = 0; c < C; ++c) {
              const Acc v2 = (value[c] - m) * im.sat + m;
              acc[c] += w * ((v2 - mean_all) * im.con + mean_all);
            }
          });
          T* po = op + n * C * HW + i * W + j;
          for (int64_t c = 0; c < C; ++c) po[c * HW] = static_cast<T>(acc[c]);
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad, const at::Tensor& dx, const at::Tensor& table,
                   const c10::optional<at::Tensor>& row_index, const Pass& pass, c10::IntArrayRef geo) {
  using Acc = at::opmath_type<T>;
  const int64_t N = grad.size(0), C = grad.size(1), H = grad.size(2), W = grad.size(3), HW = H * W;
  const T* gp = grad.const_data_ptr<T>();
  T* dp = dx.data_ptr<T>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<Acc> buf(C * HW);
    for (int64_t n = begin; n < end; ++n) {
      const Image<Acc> im(row_of(table, row_index, n), H, W, geo, pass);
      const T* g = gp + n * C * HW;
      std::fill(buf.begin(), buf.end(), Acc(0));
      for (int64_t i = 0; i < H; ++i) {
        for (int64_t j = 0; j < W; ++j) {
          im.taps(pass, H, W, i, j, [&](int64_t ti, int64_t tj, Acc w) {
            if (!im.source(pass, H, W, ti, tj)) return;
            for (int64_t c = 0; c < C; ++c) buf[c * HW + ti * W + tj] += w * static_cast<Acc>(g[c * HW + i * W + j]);
          });
        }
      }
      T* d = dp + n * C * HW;
      if (!pass.colour) {
        for (int64_t k = 0; k < C * HW; ++k) d[k] = static_cast<T>(buf[k]);
        continue;
      }
      // dx_c = c s g_c + c (1 - s) mean_C(g) + (1 - c) s-independent mean_CHW(g) (reference.backward).
      Acc total = 0;
      for (int64_t k = 0; k < C * HW; ++k) total += buf[k];
      const Acc shift = (Acc(1) - im.con) * total / static_cast<Acc>(C * HW);
      for (int64_t p = 0; p < HW; ++p) {
        Acc sum_c = 0;
        for (int64_t c = 0; c < C; ++c) sum_c += buf[c * HW + p];
        const Acc pixel = im.con * (Acc(1) - im.sat) * sum_c / static_cast<Acc>(C) + shift;
        for (int64_t c = 0; c < C; ++c) d[c * HW + p] = static_cast<T>(im.con * im.sat * buf[c * HW + p] + pixel);
      }
    }
  });
}

at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& table, const c10::optional<at::Tensor>& row_index,
                       c10::IntArrayRef ops, c10::IntArrayRef geometry) {
  check_inputs(x, table, row_index, geometry, "x");
  const Pass pass = parse(ops);
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dsa_pass_forward",
                                  [&] { forward_impl<scalar_t>(x, out, table, row_index, pass, geometry); });
  return out;
}

at::Tensor backward_cpu(const at::Tensor& grad, const at::Tensor& table, const c10::optional<at::Tensor>& row_index,
                        c10::IntArrayRef ops, c10::IntArrayRef geometry) {
  check_inputs(grad, table, row_index, geometry, "grad");
  const Pass pass = parse(ops);
  at::Tensor dx = at::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "dsa_pass_backward",
                                  [&] { backward_impl<scalar_t>(grad, dx, table, row_index, pass, geometry); });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(ddfast, CPU, m) {
  m.impl("_dsa_pass_forward", &forward_cpu);
  m.impl("_dsa_pass_backward", &backward_cpu);
}

}  // namespace dsa
}  // namespace ddfast

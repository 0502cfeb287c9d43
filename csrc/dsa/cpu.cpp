// C++ CPU kernels of one fused DSA pass (semantics: ddfast/ops/dsa/reference.py, passes: plan.py).
// A pass is [color] [crop|cutout|flip]* [scale|rotate]*. Per image (at::parallel_for over images, per-thread
// scratch allocated once per chunk, so results do not depend on the thread count):
//  1. the index maps (crop, cutout, flip) act on rows and columns separately, so they become two small
//     tables: the source row of every row and the source column of every column (-1: crop fill) plus
//     whether the row / column lies in the cutout square (a pixel is cut when both do);
//  2. colour, if any, is computed once into a per-thread [C, HW + 1] buffer (per-image mean pre-pass, then
//     one pass with the per-pixel channel mean); each plane ends with a zero slot (see 3);
//  3. without an affine, output rows are gathered from a source row through the column table; with one,
//     a tap plan (4 offsets into one plane, 4 bilinear weights; taps that are outside the image, in the
//     crop fill or in the cutout point at the zero slot) is built once and applied plane by plane.
// Backward: the adjoint of the same plan per image in a fixed order (deterministic): a scatter into a
// per-thread buffer, then the closed-form colour adjoint. fp16/bf16 accumulate in float (opmath).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
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
  bool repeated = false;  // each family at most once (the cutout table holds one square), as plan.split_pass
  for (size_t a = 0; a < ops.size(); ++a)
    for (size_t b = a + 1; b < ops.size(); ++b) repeated |= ops[a] == ops[b];
  TORCH_CHECK(!ops.empty() && k == ops.size() && !repeated, kOp, ": malformed pass (expected [color] "
              "[crop|cutout|flip]* [scale|rotate]*, each family at most once)");
  return p;
}

// DC's torch.randint over `count` values from the stored uniform (float32 arithmetic, as every backend).
int64_t uniform_to_int(float u, int64_t count) {
  return std::min(static_cast<int64_t>(std::floor(u * static_cast<float>(count))), count - 1);
}

// The parameters of one image: colour factors, integer index-map sizes, the composite affine.
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
};

// Stage 1: the pass's index maps as per-axis tables (each map moves rows and columns independently).
struct IndexMap {
  int64_t H = 0, W = 0;
  std::vector<int32_t> row;      // source row of each row before the maps, -1 in the crop fill
  std::vector<uint8_t> row_cut;  // the row crosses the cutout square
  std::vector<int32_t> cols[2];  // source column of each column, -1 in the crop fill; [1]: also -1 where cut

  IndexMap(int64_t H_, int64_t W_) : H(H_), W(W_), row(H_), row_cut(H_), cols{std::vector<int32_t>(W_),
                                                                              std::vector<int32_t>(W_)} {}

  // One axis: the maps of the pass, last first, applied to coordinate k (crop shifts it and may leave the
  // image, cutout tests its span, flip mirrors the column axis).
  template <typename Acc>
  static int32_t trace(const Pass& pass, const Image<Acc>& im, bool is_row, int64_t size, int64_t k, bool& cut) {
    cut = false;
    for (auto it = pass.index.rbegin(); it != pass.index.rend(); ++it) {
      if (*it == kCrop) {
        k += is_row ? im.shift_h : im.shift_w;
        if (k < 0 || k >= size) return -1;
      } else if (*it == kCutout) {
        const int64_t start = is_row ? im.cut_h0 : im.cut_w0, len = is_row ? im.cut_h : im.cut_w;
        cut = im.cut_on && k >= start && k < start + len;
      } else if (!is_row && im.flip) {
        k = size - 1 - k;
      }
    }
    return static_cast<int32_t>(k);
  }

  template <typename Acc>
  void build(const Pass& pass, const Image<Acc>& im) {
    bool cut = false;
    for (int64_t i = 0; i < H; ++i) row[i] = trace(pass, im, true, H, i, cut), row_cut[i] = cut;
    for (int64_t j = 0; j < W; ++j) {
      cols[0][j] = trace(pass, im, false, W, j, cut);
      cols[1][j] = cut ? -1 : cols[0][j];
    }
  }

  // Offset of input pixel (i, j) of the pre-map image in a plane, or -1 where it is zero.
  int32_t at(int64_t i, int64_t j) const {
    const int32_t r = row[i], c = cols[row_cut[i]][j];
    return (r < 0 || c < 0) ? -1 : r * static_cast<int32_t>(W) + c;
  }
};

// Stage 3 (affine passes): the bilinear taps of every output pixel (align_corners=False, zero padding).
template <typename Acc>
struct Taps {
  std::vector<std::array<int32_t, 4>> offset;  // into a plane of HW + 1 values; HW is the zero slot
  std::vector<std::array<Acc, 4>> weight;

  explicit Taps(int64_t HW) : offset(HW), weight(HW) {}

  void build(const Image<Acc>& im, const IndexMap& map) {
    const int64_t H = map.H, W = map.W;
    const int32_t zero = static_cast<int32_t>(H * W);
    for (int64_t i = 0; i < H; ++i) {
      const Acc yn = static_cast<Acc>(2 * i + 1) / static_cast<Acc>(H) - Acc(1);
      for (int64_t j = 0; j < W; ++j) {
        const int64_t p = i * W + j;
        const Acc xn = static_cast<Acc>(2 * j + 1) / static_cast<Acc>(W) - Acc(1);
        const Acc gx = im.a00 * xn + im.a01 * yn, gy = im.a10 * xn + im.a11 * yn;
        const Acc ix = ((gx + Acc(1)) * static_cast<Acc>(W) - Acc(1)) / Acc(2);
        const Acc iy = ((gy + Acc(1)) * static_cast<Acc>(H) - Acc(1)) / Acc(2);
        const Acc fx = std::floor(ix), fy = std::floor(iy);
        offset[p] = {zero, zero, zero, zero};
        weight[p] = {Acc(0), Acc(0), Acc(0), Acc(0)};
        // Some tap is inside only for fx in [-1, W - 1], fy in [-1, H - 1] (false for NaN / inf too).
        if (!(fx >= Acc(-1) && fx <= static_cast<Acc>(W - 1) && fy >= Acc(-1) && fy <= static_cast<Acc>(H - 1)))
          continue;
        const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
        const Acc wx1 = ix - fx, wy1 = iy - fy, wx0 = Acc(1) - wx1, wy0 = Acc(1) - wy1;
        const int64_t ys[2] = {y0, y0 + 1}, xs[2] = {x0, x0 + 1};
        const Acc wys[2] = {wy0, wy1}, wxs[2] = {wx0, wx1};
        for (int a = 0; a < 2; ++a) {
          if (ys[a] < 0 || ys[a] >= H) continue;
          for (int b = 0; b < 2; ++b) {
            if (xs[b] < 0 || xs[b] >= W) continue;
            const int32_t src = map.at(ys[a], xs[b]);
            if (src >= 0) offset[p][2 * a + b] = src, weight[p][2 * a + b] = wys[a] * wxs[b];
          }
        }
      }
    }
  }
};

// Sum of n values in Acc with 8 independent partial sums (vectorizable, more accurate than one chain).
template <typename T, typename Acc>
Acc sum_of(const T* v, int64_t n) {
  Acc part[8] = {};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int l = 0; l < 8; ++l) part[l] += static_cast<Acc>(v[k + l]);
  for (; k < n; ++k) part[0] += static_cast<Acc>(v[k]);
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// Stage 2: the coloured image (brightness, saturation, contrast as DC) into dst planes of HW + 1 values
// (the last one zero); without colour, the image converted to Acc.
template <typename T, typename Acc>
void stage_image(const T* img, int64_t C, int64_t HW, const Image<Acc>& im, bool colour, Acc* dst, int64_t stride) {
  for (int64_t c = 0; c < C; ++c) dst[c * stride + HW] = Acc(0);
  if (!colour) {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < HW; ++p) dst[c * stride + p] = static_cast<Acc>(img[c * HW + p]);
    return;
  }
  // mean over C, H, W after brightness (saturation keeps the per-pixel mean, so it keeps this one too)
  const Acc mean_all = sum_of<T, Acc>(img, C * HW) / static_cast<Acc>(C * HW) + im.bright;
  for (int64_t p = 0; p < HW; ++p) {
    Acc m = 0;
    for (int64_t c = 0; c < C; ++c) m += static_cast<Acc>(img[c * HW + p]) + im.bright;
    m = m / static_cast<Acc>(C);
    for (int64_t c = 0; c < C; ++c) {
      const Acc v2 = (static_cast<Acc>(img[c * HW + p]) + im.bright - m) * im.sat + m;
      dst[c * stride + p] = (v2 - mean_all) * im.con + mean_all;
    }
  }
}

// Stage 3 without an affine: each output row is a source row read through the column table.
template <typename S, typename T>
void gather_rows(const S* src, int64_t src_stride, const IndexMap& map, int64_t C, T* out) {
  const int64_t H = map.H, W = map.W;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = 0; i < H; ++i) {
      T* o = out + (c * H + i) * W;
      if (map.row[i] < 0) {
        std::fill(o, o + W, T(0));
        continue;
      }
      const S* s = src + c * src_stride + map.row[i] * W;
      const int32_t* col = map.cols[map.row_cut[i]].data();
      for (int64_t j = 0; j < W; ++j) o[j] = col[j] >= 0 ? static_cast<T>(s[col[j]]) : T(0);
    }
  }
}

// Adjoint of gather_rows into zeroed planes: every source pixel is read by at most one output pixel (the
// maps are injective where they do not zero), so the adjoint is a plain scatter of copies.
template <typename G, typename D>
void scatter_rows(const G* grad, const IndexMap& map, int64_t C, D* dst, int64_t dst_stride) {
  const int64_t H = map.H, W = map.W;
  for (int64_t c = 0; c < C; ++c) {
    D* d = dst + c * dst_stride;
    std::fill(d, d + H * W, D(0));
    for (int64_t i = 0; i < H; ++i) {
      if (map.row[i] < 0) continue;
      const G* g = grad + (c * H + i) * W;
      D* drow = d + map.row[i] * W;
      const int32_t* col = map.cols[map.row_cut[i]].data();
      for (int64_t j = 0; j < W; ++j)
        if (col[j] >= 0) drow[col[j]] = static_cast<D>(g[j]);
    }
  }
}

// The colour adjoint of reference.backward, from the gradient w.r.t. the coloured image (planes of
// `stride` values): dx_c = c s g_c + c (1 - s) mean_C(g) + (1 - c) mean_CHW(g).
template <typename T, typename Acc>
void colour_adjoint(const Acc* g, int64_t stride, int64_t C, int64_t HW, const Image<Acc>& im, T* d) {
  Acc total = 0;
  for (int64_t c = 0; c < C; ++c) total += sum_of<Acc, Acc>(g + c * stride, HW);
  const Acc shift = (Acc(1) - im.con) * total / static_cast<Acc>(C * HW);
  for (int64_t p = 0; p < HW; ++p) {
    Acc sum_c = 0;
    for (int64_t c = 0; c < C; ++c) sum_c += g[c * stride + p];
    const Acc pixel = im.con * (Acc(1) - im.sat) * sum_c / static_cast<Acc>(C) + shift;
    for (int64_t c = 0; c < C; ++c) d[c * HW + p] = static_cast<T>(im.con * im.sat * g[c * stride + p] + pixel);
  }
}

void check_inputs(const at::Tensor& x, const at::Tensor& table, const c10::optional<at::Tensor>& row_index,
                  c10::IntArrayRef geometry, const char* name) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), kOp, ": ", name, " must be a contiguous [N, C, H, W] tensor");
  TORCH_CHECK(x.size(1) * (x.size(2) * x.size(3) + 1) < std::numeric_limits<int32_t>::max(), kOp, ": ", name,
              " has too many values per image");
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
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), HW = H * W, stride = HW + 1;
  const bool affine = !pass.affine.empty();
  const T* xp = x.const_data_ptr<T>();
  T* op = out.data_ptr<T>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    IndexMap map(H, W);
    Taps<Acc> taps(affine ? HW : 0);
    std::vector<Acc> image((pass.colour || affine) ? C * stride : 0);
    for (int64_t n = begin; n < end; ++n) {
      const Image<Acc> im(row_of(table, row_index, n), H, W, geo, pass);
      const T* img = xp + n * C * HW;
      T* o = op + n * C * HW;
      map.build(pass, im);
      if (pass.colour || affine) {
        stage_image<T, Acc>(img, C, HW, im, pass.colour, image.data(), stride);
      }
      if (!affine) {
        if (pass.colour) gather_rows(image.data(), stride, map, C, o);
        else gather_rows(img, HW, map, C, o);
        continue;
      }
      taps.build(im, map);
      for (int64_t c = 0; c < C; ++c) {
        const Acc* s = image.data() + c * stride;
        T* oc = o + c * HW;
        for (int64_t p = 0; p < HW; ++p) {
          const auto& k = taps.offset[p];
          const auto& w = taps.weight[p];
          oc[p] = static_cast<T>(w[0] * s[k[0]] + w[1] * s[k[1]] + w[2] * s[k[2]] + w[3] * s[k[3]]);
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad, const at::Tensor& dx, const at::Tensor& table,
                   const c10::optional<at::Tensor>& row_index, const Pass& pass, c10::IntArrayRef geo) {
  using Acc = at::opmath_type<T>;
  const int64_t N = grad.size(0), C = grad.size(1), H = grad.size(2), W = grad.size(3), HW = H * W, stride = HW + 1;
  const bool affine = !pass.affine.empty();
  const T* gp = grad.const_data_ptr<T>();
  T* dp = dx.data_ptr<T>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    IndexMap map(H, W);
    Taps<Acc> taps(affine ? HW : 0);
    std::vector<Acc> buf((pass.colour || affine) ? C * stride : 0);
    for (int64_t n = begin; n < end; ++n) {
      const Image<Acc> im(row_of(table, row_index, n), H, W, geo, pass);
      const T* g = gp + n * C * HW;
      T* d = dp + n * C * HW;
      map.build(pass, im);
      if (!affine) {  // index maps only: scatter copies (into d directly when there is no colour)
        if (!pass.colour) {
          scatter_rows(g, map, C, d, HW);
          continue;
        }
        scatter_rows(g, map, C, buf.data(), stride);
      } else {  // adjoint of the tap plan, plane by plane, pixels and taps in a fixed order
        taps.build(im, map);
        std::fill(buf.begin(), buf.end(), Acc(0));
        for (int64_t c = 0; c < C; ++c) {
          Acc* b = buf.data() + c * stride;
          const T* gc = g + c * HW;
          for (int64_t p = 0; p < HW; ++p) {
            const auto& k = taps.offset[p];
            const auto& w = taps.weight[p];
            const Acc v = static_cast<Acc>(gc[p]);
            b[k[0]] += w[0] * v, b[k[1]] += w[1] * v, b[k[2]] += w[2] * v, b[k[3]] += w[3] * v;
          }
        }
      }
      if (pass.colour) {
        colour_adjoint(buf.data(), stride, C, HW, im, d);
      } else {
        for (int64_t c = 0; c < C; ++c)
          for (int64_t p = 0; p < HW; ++p) d[c * HW + p] = static_cast<T>(buf[c * stride + p]);
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

// C++ CPU kernels of one fused DSA pass (semantics: ddfast/ops/dsa/reference.py, passes: plan.py).
// A pass is [color] [crop|cutout|flip]* [scale|rotate]*. Per image (at::parallel_for over images, per-thread
// scratch allocated once per chunk, so results do not depend on the thread count):
//  1. the index maps (crop, cutout, flip) act on rows and columns separately, so they become two small
//     tables: the source row of every row and the source column of every column (-1: crop fill), with one
//     column table for the rows that cross the cutout square (cut columns -1 there);
//  2. colour, if any, is computed once into a per-thread [C, H, W] buffer (per-image mean pre-pass, then
//     one pass with the per-pixel channel mean);
//  3. without an affine, output rows are copied from source rows through the column table; with one, the
//     index maps first write the pre-affine image into a per-thread buffer with a zero border (2 rows /
//     columns before, 1 after), so the 4 bilinear taps of a pixel are base, base + 1, base + row,
//     base + row + 1 with no range checks: the sampling coordinates are a branch-free loop per output row,
//     then every channel reads its 4 taps.
// Backward: the adjoints of the same steps per image in a fixed order (deterministic): a scatter of the
// bilinear taps into the bordered buffer, the row copies backwards, then the closed-form colour adjoint.
// fp16/bf16 accumulate in float (opmath).
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

#include "shared/registration.h"

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

// Planes of C images: value (c, i, j) at data[c * plane + i * row + j].
template <typename S>
struct Planes {
  S* data;
  int64_t plane, row;
  S* at(int64_t c, int64_t i) const { return data + c * plane + i * row; }
};

// Stage 1: the pass's index maps as per-axis tables (each map moves rows and columns independently).
struct IndexMap {
  int64_t H = 0, W = 0;
  std::vector<int32_t> row;      // source row of each row before the maps, -1 in the crop fill
  std::vector<uint8_t> cut;      // the row crosses the cutout square
  std::vector<int32_t> cols_[2]; // source column of each column, -1 in the crop fill; [1]: also -1 where cut
  // A column table that is one run (zeros, source columns first, first + step, ... for j in [j0, j1),
  // zeros) is copied as such: every table of a pass without a cutout hole, whatever its shift and flip.
  struct Run {
    bool ok = false;
    int64_t j0 = 0, j1 = 0, first = 0, step = 1;
  } runs_[2];

  IndexMap(int64_t H_, int64_t W_) : H(H_), W(W_), row(H_), cut(H_), cols_{std::vector<int32_t>(W_),
                                                                         std::vector<int32_t>(W_)} {}
  const int32_t* cols(int64_t i) const { return cols_[cut[i]].data(); }  // the column table of row i
  const Run& run(int64_t i) const { return runs_[cut[i]]; }

  static Run find_run(const std::vector<int32_t>& t) {
    Run r;
    const int64_t W = static_cast<int64_t>(t.size());
    while (r.j0 < W && t[r.j0] < 0) ++r.j0;
    r.j1 = r.j0;
    if (r.j0 == W) return r.ok = true, r;  // all zero
    r.first = t[r.j0];
    r.step = (r.j0 + 1 < W && t[r.j0 + 1] == r.first - 1) ? -1 : 1;
    while (r.j1 < W && t[r.j1] >= 0 && t[r.j1] == r.first + r.step * (r.j1 - r.j0)) ++r.j1;
    int64_t j = r.j1;
    while (j < W && t[j] < 0) ++j;
    r.ok = j == W;
    return r;
  }

  // One axis: the maps of the pass, last first, applied to coordinate k (crop shifts it and may leave the
  // image, cutout tests its span, flip mirrors the column axis).
  template <typename Acc>
  static int32_t trace(const Pass& pass, const Image<Acc>& im, bool is_row, int64_t size, int64_t k, bool& in_cut) {
    in_cut = false;
    for (auto it = pass.index.rbegin(); it != pass.index.rend(); ++it) {
      if (*it == kCrop) {
        k += is_row ? im.shift_h : im.shift_w;
        if (k < 0 || k >= size) return -1;
      } else if (*it == kCutout) {
        const int64_t start = is_row ? im.cut_h0 : im.cut_w0, len = is_row ? im.cut_h : im.cut_w;
        in_cut = im.cut_on && k >= start && k < start + len;
      } else if (!is_row && im.flip) {
        k = size - 1 - k;
      }
    }
    return static_cast<int32_t>(k);
  }

  template <typename Acc>
  void build(const Pass& pass, const Image<Acc>& im) {
    bool in_cut = false;
    for (int64_t i = 0; i < H; ++i) row[i] = trace(pass, im, true, H, i, in_cut), cut[i] = in_cut;
    for (int64_t j = 0; j < W; ++j) {
      cols_[0][j] = trace(pass, im, false, W, j, in_cut);
      cols_[1][j] = in_cut ? -1 : cols_[0][j];
    }
    runs_[0] = find_run(cols_[0]), runs_[1] = find_run(cols_[1]);
  }

  // Stage 3 (index part): dst(c, i, j) = src(c, row[i], cols(i)[j]), 0 in the crop fill and the cutout.
  template <typename S, typename D>
  void gather(Planes<const S> src, Planes<D> dst, int64_t C) const {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t i = 0; i < H; ++i) {
        D* o = dst.at(c, i);
        if (row[i] < 0) {
          std::fill(o, o + W, D(0));
          continue;
        }
        const S* s = src.at(c, row[i]);
        const Run& r = run(i);
        if (r.ok) {  // zeros, a contiguous (or reversed) copy, zeros
          std::fill(o, o + r.j0, D(0));
          const S* from = s + r.first;
          D* to = o + r.j0;
          if (r.step > 0)
            for (int64_t k = 0; k < r.j1 - r.j0; ++k) to[k] = static_cast<D>(from[k]);
          else
            for (int64_t k = 0; k < r.j1 - r.j0; ++k) to[k] = static_cast<D>(from[-k]);
          std::fill(o + r.j1, o + W, D(0));
          continue;
        }
        const int32_t* col = cols(i);
        for (int64_t j = 0; j < W; ++j) o[j] = col[j] >= 0 ? static_cast<D>(s[col[j]]) : D(0);
      }
    }
  }

  // Adjoint of gather into dst (overwritten): every source pixel is read by at most one output pixel (the
  // maps are injective where they do not zero), so the adjoint is a scatter of copies into zeroed planes.
  template <typename G, typename D>
  void scatter(Planes<const G> grad, Planes<D> dst, int64_t C) const {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t i = 0; i < H; ++i) std::fill(dst.at(c, i), dst.at(c, i) + W, D(0));
      for (int64_t i = 0; i < H; ++i) {
        if (row[i] < 0) continue;
        const G* g = grad.at(c, i);
        D* d = dst.at(c, row[i]);
        const Run& r = run(i);
        if (r.ok) {
          const G* from = g + r.j0;
          D* to = d + r.first;
          if (r.step > 0)
            for (int64_t k = 0; k < r.j1 - r.j0; ++k) to[k] = static_cast<D>(from[k]);
          else
            for (int64_t k = 0; k < r.j1 - r.j0; ++k) to[-k] = static_cast<D>(from[k]);
          continue;
        }
        const int32_t* col = cols(i);
        for (int64_t j = 0; j < W; ++j)
          if (col[j] >= 0) d[col[j]] = static_cast<D>(g[j]);
      }
    }
  }
};

// Stage 3 (affine part): the bilinear taps (align_corners=False, zero padding) of one output row in a
// plane with a zero border of 2 rows / columns on each side (row length W + 4): the first tap's offset
// and the 4 weights per pixel. Sampling points are clamped into the border, where all taps read zeros.
constexpr int64_t kPadBefore = 2, kPad = 4;

// GCC keeps float compares out of if-converted (vectorized) loops while FP traps are modelled; the flags
// are not observed here and the values do not change.
#if defined(__GNUC__) && !defined(__clang__)
#define DDFAST_NO_TRAPPING_MATH __attribute__((optimize("no-trapping-math")))
#else
#define DDFAST_NO_TRAPPING_MATH
#endif

// The sampling coordinates of one output row: first tap (y0, x0) and the 4 weights of each pixel, in Acc
// arithmetic and selects only, so that it vectorizes (restrict: too many pointers for GCC's run-time
// alias checks otherwise).
template <typename Acc>
DDFAST_NO_TRAPPING_MATH void bilinear_row(int64_t W, const Acc* __restrict__ xn, Acc ax, Acc cx, Acc by, Acc dy,
                                          Acc Wf, Acc Hf, Acc* __restrict__ xf, Acc* __restrict__ yf,
                                          Acc* __restrict__ w0, Acc* __restrict__ w1, Acc* __restrict__ w2,
                                          Acc* __restrict__ w3) {
  for (int64_t j = 0; j < W; ++j) {
    const Acc gx = ax * xn[j] + by, gy = cx * xn[j] + dy;
    Acc ix = ((gx + Acc(1)) * Wf - Acc(1)) * Acc(0.5), iy = ((gy + Acc(1)) * Hf - Acc(1)) * Acc(0.5);
    // clamped to [-2, W] x [-2, H]: beyond, both taps of an axis lie in the zero border (NaN -> -2)
    ix = ix >= Acc(-kPadBefore) ? ix : Acc(-kPadBefore), iy = iy >= Acc(-kPadBefore) ? iy : Acc(-kPadBefore);
    ix = ix <= Wf ? ix : Wf, iy = iy <= Hf ? iy : Hf;
    Acc fx = static_cast<Acc>(static_cast<int32_t>(ix)), fy = static_cast<Acc>(static_cast<int32_t>(iy));
    fx = ix < fx ? fx - Acc(1) : fx, fy = iy < fy ? fy - Acc(1) : fy;  // floor from truncation
    const Acc wx1 = ix - fx, wy1 = iy - fy, wx0 = Acc(1) - wx1, wy0 = Acc(1) - wy1;
    xf[j] = fx, yf[j] = fy;
    w0[j] = wy0 * wx0, w1[j] = wy0 * wx1, w2[j] = wy1 * wx0, w3[j] = wy1 * wx1;
  }
}

template <typename Acc>
struct RowTaps {
  int64_t H, W, row;                      // row: the bordered row length W + 4
  Acc a00 = 1, a01 = 0, a10 = 0, a11 = 1;
  std::vector<Acc> xn;                    // normalized x of each column
  std::vector<Acc> x0, y0;                // tap (y0, x0) (integers)
  std::vector<int32_t> base;              // its offset in the bordered plane
  std::array<std::vector<Acc>, 4> weight; // taps (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)

  RowTaps(int64_t H_, int64_t W_) : H(H_), W(W_), row(W_ + kPad), xn(W_), x0(W_), y0(W_), base(W_) {
    for (auto& w : weight) w.resize(W_);
    for (int64_t j = 0; j < W; ++j) xn[j] = static_cast<Acc>(2 * j + 1) / static_cast<Acc>(W) - Acc(1);
  }

  void set_image(const Image<Acc>& im) { a00 = im.a00, a01 = im.a01, a10 = im.a10, a11 = im.a11; }

  void build(int64_t i) {
    const Acc yn = static_cast<Acc>(2 * i + 1) / static_cast<Acc>(H) - Acc(1);
    bilinear_row(W, xn.data(), a00, a10, a01 * yn, a11 * yn, static_cast<Acc>(W), static_cast<Acc>(H), x0.data(),
                 y0.data(), weight[0].data(), weight[1].data(), weight[2].data(), weight[3].data());
    const int32_t stride = static_cast<int32_t>(row), origin = static_cast<int32_t>(kPadBefore * (row + 1));
    for (int64_t j = 0; j < W; ++j)
      base[j] = static_cast<int32_t>(y0[j]) * stride + static_cast<int32_t>(x0[j]) + origin;
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

// Stage 2: the coloured image (brightness, saturation, contrast as DC) into dst [C, HW], plane by plane;
// pixel: scratch for the per-pixel channel mean.
template <typename T, typename Acc, typename D>
void colour(const T* img, int64_t C, int64_t HW, const Image<Acc>& im, Acc* pixel, D* dst) {
  // mean over C, H, W after brightness (saturation keeps the per-pixel mean, so it keeps this one too)
  const Acc mean_all = sum_of<T, Acc>(img, C * HW) / static_cast<Acc>(C * HW) + im.bright;
  std::fill(pixel, pixel + HW, Acc(0));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t p = 0; p < HW; ++p) pixel[p] += static_cast<Acc>(img[c * HW + p]);
  for (int64_t p = 0; p < HW; ++p) pixel[p] = pixel[p] / static_cast<Acc>(C) + im.bright;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t p = 0; p < HW; ++p) {
      const Acc v2 = (static_cast<Acc>(img[c * HW + p]) + im.bright - pixel[p]) * im.sat + pixel[p];
      dst[c * HW + p] = static_cast<D>((v2 - mean_all) * im.con + mean_all);
    }
  }
}

// The colour adjoint of reference.backward, from the gradient g [C, HW] w.r.t. the coloured image:
// dx_c = c s g_c + c (1 - s) mean_C(g) + (1 - c) mean_CHW(g).
template <typename G, typename T, typename Acc>
void colour_adjoint(const G* g, int64_t C, int64_t HW, const Image<Acc>& im, Acc* pixel, T* d) {
  const Acc shift = (Acc(1) - im.con) * sum_of<G, Acc>(g, C * HW) / static_cast<Acc>(C * HW);
  std::fill(pixel, pixel + HW, Acc(0));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t p = 0; p < HW; ++p) pixel[p] += static_cast<Acc>(g[c * HW + p]);
  const Acc k_pixel = im.con * (Acc(1) - im.sat), k_own = im.con * im.sat;
  for (int64_t p = 0; p < HW; ++p) pixel[p] = k_pixel * pixel[p] / static_cast<Acc>(C) + shift;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t p = 0; p < HW; ++p) d[c * HW + p] = static_cast<T>(k_own * static_cast<Acc>(g[c * HW + p]) + pixel[p]);
}

void check_inputs(const at::Tensor& x, const at::Tensor& table, const c10::optional<at::Tensor>& row_index,
                  c10::IntArrayRef geometry, const char* name) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), kOp, ": ", name, " must be a contiguous [N, C, H, W] tensor");
  TORCH_CHECK((x.size(2) + kPad) * (x.size(3) + kPad) < std::numeric_limits<int32_t>::max(), kOp, ": ", name,
              " has too many pixels per image");
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

// Per-thread scratch of one pass: index tables, bilinear taps, the coloured image, the bordered image.
template <typename Acc>
struct Scratch {
  IndexMap map;
  RowTaps<Acc> taps;
  std::vector<Acc> pixel, coloured, bordered;  // [HW]; [C, HW]; [C, H + 4, W + 4] with a zero border

  Scratch(const Pass& pass, int64_t C, int64_t H, int64_t W)
      : map(H, W), taps(H, W), pixel(H * W), coloured(pass.colour ? C * H * W : 0),
        bordered(pass.affine.empty() ? 0 : C * (H + kPad) * (W + kPad), Acc(0)) {}

  Planes<Acc> colour_planes() { return {coloured.data(), map.H * map.W, map.W}; }
  // the image part of the bordered planes (the border stays zero: only the image part is ever written)
  Planes<Acc> bordered_planes() {
    const int64_t row = map.W + kPad;
    return {bordered.data() + kPadBefore * row + kPadBefore, (map.H + kPad) * row, row};
  }
};

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& out, const at::Tensor& table,
                  const c10::optional<at::Tensor>& row_index, const Pass& pass, c10::IntArrayRef geo) {
  using Acc = at::opmath_type<T>;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), HW = H * W;
  const bool affine = !pass.affine.empty();
  const T* xp = x.const_data_ptr<T>();
  T* op = out.data_ptr<T>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    Scratch<Acc> s(pass, C, H, W);
    for (int64_t n = begin; n < end; ++n) {
      const Image<Acc> im(row_of(table, row_index, n), H, W, geo, pass);
      const T* img = xp + n * C * HW;
      T* o = op + n * C * HW;
      s.map.build(pass, im);
      if (pass.colour && pass.index.empty() && !affine) {  // colour alone: straight into the output
        colour(img, C, HW, im, s.pixel.data(), o);
        continue;
      }
      if (pass.colour) colour(img, C, HW, im, s.pixel.data(), s.coloured.data());
      const Planes<Acc> dst = affine ? s.bordered_planes() : Planes<Acc>{nullptr, 0, 0};
      const Planes<T> out_planes{o, HW, W};
      if (pass.colour) {
        const Planes<const Acc> src{s.coloured.data(), HW, W};
        affine ? s.map.gather(src, dst, C) : s.map.gather(src, out_planes, C);
      } else {
        const Planes<const T> src{img, HW, W};
        affine ? s.map.gather(src, dst, C) : s.map.gather(src, out_planes, C);
      }
      if (!affine) continue;
      // bilinear sample of the bordered image: the row's taps once, then every channel
      s.taps.set_image(im);
      const int64_t r = s.taps.row;
      for (int64_t i = 0; i < H; ++i) {
        s.taps.build(i);
        const int32_t* b = s.taps.base.data();
        const Acc *w0 = s.taps.weight[0].data(), *w1 = s.taps.weight[1].data(), *w2 = s.taps.weight[2].data(),
                  *w3 = s.taps.weight[3].data();
        for (int64_t c = 0; c < C; ++c) {
          const Acc* src = s.bordered.data() + c * (H + kPad) * r;
          T* oc = o + c * HW + i * W;
          for (int64_t j = 0; j < W; ++j) {
            const Acc* t = src + b[j];
            oc[j] = static_cast<T>(w0[j] * t[0] + w1[j] * t[1] + w2[j] * t[r] + w3[j] * t[r + 1]);
          }
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
  const bool affine = !pass.affine.empty();
  const T* gp = grad.const_data_ptr<T>();
  T* dp = dx.data_ptr<T>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    Scratch<Acc> s(pass, C, H, W);
    for (int64_t n = begin; n < end; ++n) {
      const Image<Acc> im(row_of(table, row_index, n), H, W, geo, pass);
      const T* g = gp + n * C * HW;
      T* d = dp + n * C * HW;
      s.map.build(pass, im);
      if (pass.colour && pass.index.empty() && !affine) {  // colour alone
        colour_adjoint(g, C, HW, im, s.pixel.data(), d);
        continue;
      }
      // the index maps' adjoint writes the gradient w.r.t. the coloured image (or d when there is no colour)
      const Planes<Acc> to_colour = s.colour_planes();
      const Planes<T> to_d{d, HW, W};
      if (affine) {  // adjoint of the taps into the bordered buffer: rows, channels, pixels in a fixed order
        std::fill(s.bordered.begin(), s.bordered.end(), Acc(0));
        s.taps.set_image(im);
        const int64_t r = s.taps.row;
        for (int64_t i = 0; i < H; ++i) {
          s.taps.build(i);
          const int32_t* b = s.taps.base.data();
          const Acc *w0 = s.taps.weight[0].data(), *w1 = s.taps.weight[1].data(), *w2 = s.taps.weight[2].data(),
                    *w3 = s.taps.weight[3].data();
          for (int64_t c = 0; c < C; ++c) {
            Acc* dst = s.bordered.data() + c * (H + kPad) * r;
            const T* gc = g + c * HW + i * W;
            for (int64_t j = 0; j < W; ++j) {
              const Acc v = static_cast<Acc>(gc[j]);
              Acc* t = dst + b[j];
              t[0] += w0[j] * v, t[1] += w1[j] * v, t[r] += w2[j] * v, t[r + 1] += w3[j] * v;
            }
          }
        }
        const Planes<Acc> bp = s.bordered_planes();
        const Planes<const Acc> src{bp.data, bp.plane, bp.row};
        pass.colour ? s.map.scatter(src, to_colour, C) : s.map.scatter(src, to_d, C);
      } else {
        const Planes<const T> src{g, HW, W};
        pass.colour ? s.map.scatter(src, to_colour, C) : s.map.scatter(src, to_d, C);
      }
      if (pass.colour) colour_adjoint(s.coloured.data(), C, HW, im, s.pixel.data(), d);
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

DDFAST_IMPL_FORWARD_BACKWARD(CPU, dsa_pass, forward_cpu, backward_cpu)

}  // namespace dsa
}  // namespace ddfast

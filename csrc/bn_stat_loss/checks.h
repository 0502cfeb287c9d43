// Internal consistency checks for the compiled bn_stat_loss ops. User-facing validation (with argument
// names and indices) happens once in Python; these guard direct torch.ops calls.
#pragma once

#include <ATen/ATen.h>

#include "shared/tensors.h"

namespace ddfast {
namespace bn_stat_loss {

constexpr int64_t kItemFields = 4;   // layer, channel, first run, number of runs
constexpr int64_t kLayerFields = 6;  // C, S, B, first item, pieces per channel, first channel

// The plan (ddfast/ops/bn_stat_loss/plan.py) indexes the activations and the statistics: every field is
// checked against the shapes, so a malformed table passed to the private op cannot read or write out of
// bounds. Layer l: (C, S, B, first item, pieces per channel, first channel), C, S, B >= 1, its items
// contiguous from `first item`, channels numbered consecutively; item: (layer, channel, first run, runs).
inline void check_plan(const int64_t* layer, int64_t num_layers, const at::Tensor& items) {
  const int64_t* item = items.const_data_ptr<int64_t>();
  int64_t next_item = 0, next_channel = 0;
  for (int64_t l = 0; l < num_layers; ++l) {
    const int64_t* f = layer + l * kLayerFields;
    TORCH_CHECK(f[0] >= 1 && f[1] >= 1 && f[2] >= 1 && f[4] >= 1 && f[3] == next_item && f[5] == next_channel,
                "bn_stat_loss: malformed layer table entry ", l);
    next_item += f[0] * f[4];
    next_channel += f[0];
  }
  TORCH_CHECK(items.size(0) == next_item, "bn_stat_loss: the work items do not match the layer table");
  for (int64_t i = 0; i < items.size(0); ++i) {
    const int64_t* w = item + i * kItemFields;
    TORCH_CHECK(w[0] >= 0 && w[0] < num_layers, "bn_stat_loss: work item ", i, " names layer ", w[0]);
    const int64_t* f = layer + w[0] * kLayerFields;
    TORCH_CHECK(w[1] >= 0 && w[1] < f[0] && w[2] >= 0 && w[3] >= 1 && w[2] + w[3] <= f[2],
                "bn_stat_loss: work item ", i, " lies outside its layer");
  }
}

// Statistics saved by the forward: per-channel means and variances, then two norms per layer.
inline void check_stats(const at::Tensor& stats, const int64_t* layer, int64_t num_layers, at::ScalarType acc) {
  int64_t channels = 0;
  for (int64_t l = 0; l < num_layers; ++l) channels += layer[l * kLayerFields];
  TORCH_CHECK(stats.dim() == 1 && stats.numel() == 2 * channels + 2 * num_layers && stats.scalar_type() == acc,
              "bn_stat_loss: malformed saved statistics");
}

inline void check_inputs(at::TensorList acts, at::TensorList means, at::TensorList vars, const at::Tensor& layers,
                         const at::Tensor& items, at::ArrayRef<double> weights) {
  const auto n = acts.size();
  TORCH_CHECK(n > 0 && means.size() == n && vars.size() == n && weights.size() == n,
              "bn_stat_loss: activations, running_means, running_vars and weights must be non-empty and of equal "
              "length");
  TORCH_CHECK(layers.scalar_type() == at::kLong && layers.dim() == 2 && layers.size(0) == static_cast<int64_t>(n) &&
                  layers.size(1) == kLayerFields && layers.is_contiguous(), "bn_stat_loss: malformed layer table");
  TORCH_CHECK(items.scalar_type() == at::kLong && items.dim() == 2 && items.size(1) == kItemFields &&
                  items.is_contiguous(), "bn_stat_loss: malformed work items");
  const auto acc = accumulate_type(acts[0].scalar_type());
  const int64_t* layer = layers.const_data_ptr<int64_t>();
  for (size_t l = 0; l < n; ++l) {
    const auto& a = acts[l];
    TORCH_CHECK(a.is_contiguous() && a.dim() >= 2 && a.dim() <= 4, "bn_stat_loss: activation ", l,
                " must be contiguous with 2 to 4 dimensions");
    TORCH_CHECK(a.scalar_type() == acts[0].scalar_type() && a.device() == acts[0].device(), "bn_stat_loss: activation ",
                l, " has a different dtype or device");
    const int64_t* f = layer + l * kLayerFields;
    TORCH_CHECK(a.size(0) == f[2] && a.size(1) == f[0] && a.numel() == f[0] * f[1] * f[2], "bn_stat_loss: activation ",
                l, " does not match the layer table");
    for (const auto& t : {means[l], vars[l]}) {
      TORCH_CHECK(t.is_contiguous() && t.dim() == 1 && t.size(0) == a.size(1) && t.scalar_type() == acc &&
                      t.device() == a.device(), "bn_stat_loss: running statistics ", l,
                  " must be contiguous [C] tensors in the accumulate dtype");
    }
  }
  check_plan(layer, static_cast<int64_t>(n), items);
}

}  // namespace bn_stat_loss
}  // namespace ddfast

#pragma once
// The one place that papers over LibTorch version differences (Debian's 1.13 vs pip/NGC 2.x).
#include <torch/version.h>

#define TAXON_TORCH_VERSION_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// ATen's fused scaled_dot_product_attention exists from 2.0 on.
#if TAXON_TORCH_VERSION_AT_LEAST(2, 0)
#define TAXON_HAS_SDPA 1
#else
#define TAXON_HAS_SDPA 0
#endif

// 2.4 replaced at::autocast::set_cpu_enabled / set_autocast_cpu_dtype (and the gpu variants) by per-device
// set_autocast_enabled(device_type, on) / set_autocast_dtype(device_type, dtype); used by train/amp.hpp.
#if TAXON_TORCH_VERSION_AT_LEAST(2, 4)
#define TAXON_AUTOCAST_PER_DEVICE 1
#else
#define TAXON_AUTOCAST_PER_DEVICE 0
#endif

namespace taxon::compat {
inline constexpr const char* torch_version = TORCH_VERSION;
}  // namespace taxon::compat

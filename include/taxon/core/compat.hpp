#pragma once
// The one place that papers over LibTorch version differences (Debian's 1.13 vs pip/NGC 2.x).
#include <torch/version.h>

#include <sstream>
#include <string>
#include <type_traits>

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

// at::mm_out(out, a, b, out_dtype): bf16 × bf16 → fp32 in one cuBLAS call (CUDA), used by the fused loss's
// MatmulPrecision::bf16; older LibTorch converts the operands to fp32 instead.
#if TAXON_TORCH_VERSION_AT_LEAST(2, 9)
#define TAXON_HAS_MM_OUT_DTYPE 1
#else
#define TAXON_HAS_MM_OUT_DTYPE 0
#endif

// at::_fused_adamw_ (one multi-tensor kernel for the whole AdamW update, CUDA and CPU) from 2.4 on; used by
// train/fused_adamw.hpp when TrainerOptions::fused_adamw is set.
#if TAXON_TORCH_VERSION_AT_LEAST(2, 4)
#define TAXON_HAS_FUSED_ADAMW 1
#else
#define TAXON_HAS_FUSED_ADAMW 0
#endif

// c10d: 2.0 split the backends (ProcessGroupGloo, ProcessGroupNCCL) off ProcessGroup onto c10d::Backend; on 1.13
// they derive from c10d::ProcessGroup. Names the common base that dist/process_group.hpp holds its backend as
// (the c10d headers themselves are included there, not here).
#if TAXON_TORCH_VERSION_AT_LEAST(2, 0)
#define TAXON_C10D_BACKEND ::c10d::Backend
#else
#define TAXON_C10D_BACKEND ::c10d::ProcessGroup
#endif

namespace taxon::compat {
inline constexpr const char* torch_version = TORCH_VERSION;

// A parameter's entry in torch::optim::Optimizer::state(), keyed by its TensorImpl address: formatted as a string
// on 1.13 (c10::guts::to_string), the pointer itself on 2.x. StateMap is the optimizer's state() map.
template <typename StateMap, typename TensorT>
auto& optimizer_param_state(StateMap& state, const TensorT& param) {
  using Key = typename std::decay_t<StateMap>::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream address;
    address << param.unsafeGetTensorImpl();
    return *state.at(address.str());
  } else {
    return *state.at(static_cast<Key>(param.unsafeGetTensorImpl()));
  }
}
}  // namespace taxon::compat

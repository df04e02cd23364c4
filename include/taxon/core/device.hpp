#pragma once
// Choosing the compute device from a user's words: "auto" | "cpu" | "cuda" | "cuda:N" -> at::Device.
//
//   const auto choice = taxon::parse_device(flag);   // throws [taxon.core.no-cuda] at once if CUDA is impossible
//   if (choice.fell_back()) taxon::log::info("device: ", choice.describe());
//
// "auto" takes the first GPU when one is usable and the CPU otherwise, and says why in `fallback_reason`;
// "cuda" and "cuda:N" never fall back: without a usable device they fail before any work starts, naming what was
// asked and why it cannot be had (a CPU-only LibTorch such as Debian's, or no visible GPU).
#include "taxon/core/compat.hpp"
#include "taxon/core/error.hpp"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/Device.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

namespace taxon {

// What CUDA this process can use: whether the LibTorch it runs on has CUDA compiled in, and how many devices
// the CUDA runtime shows (CUDA_VISIBLE_DEVICES applies).
struct CudaAvailability {
  bool built = false;
  int64_t devices = 0;

  static CudaAvailability query() {
    CudaAvailability a;
    // The CUDA device guard is registered by libtorch_cuda whether or not a GPU is present.
    a.built = c10::impl::hasDeviceGuardImpl(c10::DeviceType::CUDA);
    a.devices = a.built && at::hasCUDA() ? static_cast<int64_t>(at::getNumGPUs()) : 0;
    return a;
  }

  // Why no CUDA device can be used (empty when one can).
  std::string unavailable_reason() const {
    if (!built)
      return c10::str("this LibTorch (", compat::torch_version,
                      ") was built without CUDA; Debian's libtorch is CPU-only, so build taxon against a CUDA "
                      "LibTorch (see the README's CUDA section)");
    if (devices == 0) {
      const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
      return c10::str("LibTorch ", compat::torch_version, " has CUDA but no GPU is visible",
                      visible ? c10::str(" (CUDA_VISIBLE_DEVICES='", visible, "')") : std::string(),
                      "; check nvidia-smi and the driver");
    }
    return {};
  }
};

struct DeviceChoice {
  at::Device device = at::Device(at::kCPU);
  std::string requested;        // the words asked for, e.g. "auto" or "cuda:1"
  std::string fallback_reason;  // set when "auto" chose the CPU: why no GPU is used

  bool fell_back() const { return !fallback_reason.empty(); }
  bool is_cuda() const { return device.is_cuda(); }
  // "cpu", "cuda:0 (asked: auto)", or "cpu (asked: auto; falling back to CPU: <reason>)".
  std::string describe() const {
    std::string s = device.str();
    if (requested == s) return s;
    s += " (asked: " + requested;
    if (fell_back()) s += "; falling back to CPU: " + fallback_reason;
    return s + ")";
  }
};

// `spec` against a given CUDA availability (tests pass their own; programs use the overload below).
inline DeviceChoice parse_device(std::string_view spec, const CudaAvailability& cuda) {
  DeviceChoice choice;
  choice.requested = std::string(spec);
  if (spec == "cpu") return choice;
  if (spec == "auto") {
    if (cuda.built && cuda.devices > 0) choice.device = at::Device(at::kCUDA, 0);
    else choice.fallback_reason = cuda.unavailable_reason();
    return choice;
  }
  int64_t index = 0;
  if (spec != "cuda") {
    constexpr std::string_view prefix = "cuda:";
    bool numbered = false;
    if (spec.size() > prefix.size() && spec.substr(0, prefix.size()) == prefix) {
      const auto [end, ec] = std::from_chars(spec.data() + prefix.size(), spec.data() + spec.size(), index);
      numbered = ec == std::errc() && end == spec.data() + spec.size() && index >= 0;
    }
    TAXON_CHECK(numbered, "core.bad-device", "device '", spec,
                "' is not one of auto, cpu, cuda, cuda:N (N = 0, 1, ...)");
  }
  TAXON_CHECK(cuda.built && cuda.devices > 0, "core.no-cuda", "device '", spec,
              "' was asked for but no CUDA device can be used: ", cuda.unavailable_reason(),
              ". Use 'cpu', or 'auto' to take a GPU only when there is one.");
  TAXON_CHECK(index < cuda.devices, "core.no-such-device", "device '", spec, "' was asked for but only ",
              cuda.devices, " CUDA device", cuda.devices == 1 ? " is" : "s are", " visible (cuda:0",
              cuda.devices > 1 ? c10::str("..cuda:", cuda.devices - 1) : std::string(), ")");
  choice.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  return choice;
}

// `spec` against what this process can use.
inline DeviceChoice parse_device(std::string_view spec) { return parse_device(spec, CudaAvailability::query()); }

// Fails with the same errors as parse_device when `device` is a CUDA device this process cannot use (library
// options taking an at::Device check it up front, so a bad choice is reported before any work, not deep inside a
// kernel call). Other device types are left to LibTorch.
inline void require_usable(at::Device device, const CudaAvailability& cuda = CudaAvailability::query()) {
  if (!device.is_cuda()) return;
  parse_device(device.has_index() ? device.str() : std::string("cuda"), cuda);
}

// A host batch copied to `device`: asynchronously when it sits in pinned memory (LoaderOptions::pin_memory), so
// the copy overlaps other work. The caller keeps the host tensor alive until the stream has synchronised (any
// .item() or device-to-host copy does), because the loader recycles its buffers once they are released.
inline at::Tensor batch_to_device(const at::Tensor& host, at::Device device) {
  if (host.device() == device) return host;
  return host.to(device, /*non_blocking=*/device.is_cuda() && host.is_pinned());
}

// A step applied to a batch's images once they are on the compute device: e.g. data::normalize_on_device for
// the uint8 batches that to_chw() collates (a quarter of the bytes to pin and copy).
using DeviceImageStep = std::function<at::Tensor(const at::Tensor&)>;

}  // namespace taxon

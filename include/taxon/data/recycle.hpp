#pragma once
// Per-thread reuse of the few large per-image buffers (decoded pixels, resize output). glibc hands a freed
// block of a few hundred KiB back to the kernel once the heap top grows past its trim threshold, and every
// page of the next image's buffer then faults again: ~11 us per 4 KiB page on these VMs, up to 40 us per image
// in the loader, varying run to run with the heap's layout.
#include <ATen/ATen.h>

#include <cstdint>

namespace taxon::data::detail {

// A few buffers handed out as tensor views; one is reused only once no view of it is left anywhere (its storage's
// reference count is the holder's alone), so a caller that keeps an image simply gets another buffer next time.
class RecycledBuffers {
 public:
  static constexpr int kSlots = 2;  // two outstanding outputs per thread and call site (e.g. crop, then resize)
  // Buffers above this are not kept: with kSlots, a thread holds at most 96 MiB per call site.
  static constexpr std::int64_t kMaxKeptBytes = std::int64_t{48} << 20;

  // A contiguous uint8 tensor of `shape` whose data starts `offset` bytes into its buffer.
  at::Tensor take(at::IntArrayRef shape, std::int64_t offset = 0) {
    std::int64_t bytes = 1;
    for (auto d : shape) bytes *= d;
    const std::int64_t need = bytes + offset;
    at::Tensor* slot = nullptr;
    if (need <= kMaxKeptBytes) {
      for (auto& s : slots_)
        if (s.defined() && s.numel() >= need && s.storage().use_count() == 1) return view(s, shape, offset, bytes);
      for (auto& s : slots_)
        if (!s.defined() || s.storage().use_count() == 1) slot = &s;
    }
    at::Tensor fresh = at::empty({need}, at::kByte);
    if (slot != nullptr) *slot = fresh;
    return view(fresh, shape, offset, bytes);
  }

 private:
  static at::Tensor view(const at::Tensor& buffer, at::IntArrayRef shape, std::int64_t offset, std::int64_t bytes) {
    return buffer.narrow(0, offset, bytes).view(shape);
  }
  at::Tensor slots_[kSlots];
};

}  // namespace taxon::data::detail

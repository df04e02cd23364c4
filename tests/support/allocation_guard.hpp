#pragma once
// Proves that a reader validates sizes before allocating: while an AllocationGuard lives, every CPU tensor
// allocation goes through it, requests above `refuse_above` bytes fail (as an allocator out of memory would) and
// the largest request is recorded. A reader that trusts a hostile header then fails a test instead of quietly
// reserving gigabytes (overcommit) or aborting the sanitizer build.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <utility>

namespace taxon::test {

class AllocationGuard final : public c10::Allocator {
 public:
  explicit AllocationGuard(std::size_t refuse_above) : refuse_above_(refuse_above), inner_(c10::GetCPUAllocator()) {
    c10::SetCPUAllocator(this, /*priority=*/kPriority);
  }
  ~AllocationGuard() { c10::SetCPUAllocator(inner_, kPriority); }
  AllocationGuard(const AllocationGuard&) = delete;
  AllocationGuard& operator=(const AllocationGuard&) = delete;

  // The largest request seen, refused or not.
  std::size_t largest() const { return largest_.load(); }

  // No `override` here: the interface differs across LibTorch versions (1.13: allocate() const; 2.x: copy_data(),
  // and a non-const allocate() from 2.3), and defining every variant implements whichever the base declares.
  c10::DataPtr allocate(std::size_t n) { return std::as_const(*this).allocate(n); }
  c10::DataPtr allocate(std::size_t n) const {
    std::size_t seen = largest_.load();
    while (n > seen && !largest_.compare_exchange_weak(seen, n)) {
    }
    TORCH_CHECK(n <= refuse_above_, "AllocationGuard: refused a request of ", n, " bytes (limit ", refuse_above_, ")");
    return inner_->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const { return inner_->raw_deleter(); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::copy_n(static_cast<const char*>(src), count, static_cast<char*>(dest)); }

 private:
  // Above the default allocator's registration priority, so this one is used; restored on destruction.
  static constexpr uint8_t kPriority = 200;
  std::size_t refuse_above_;
  c10::Allocator* inner_;
  mutable std::atomic<std::size_t> largest_{0};
};

}  // namespace taxon::test

#pragma once
// Runs a test body once per SIMD variant of taxon's CPU kernels that this machine supports.
#include "taxon/core/cpu.hpp"

#include <vector>

namespace taxon::test {

inline std::vector<taxon::cpu::Isa> runnable_isas() {
  using taxon::cpu::Isa;
  std::vector<Isa> out;
  for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512, Isa::avx512_vnni})
    if (taxon::cpu::isa_supported(isa)) out.push_back(isa);
  return out;
}

// Pins one kernel variant for a scope.
struct IsaScope {
  explicit IsaScope(taxon::cpu::Isa isa) { taxon::cpu::override_isa(isa); }
  ~IsaScope() { taxon::cpu::override_isa(taxon::cpu::detect_isa()); }
  IsaScope(const IsaScope&) = delete;
  IsaScope& operator=(const IsaScope&) = delete;
};

}  // namespace taxon::test

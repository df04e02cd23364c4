// Compile check (CI, nvcc): a CUDA translation unit of a TAXON_WITH_CUDA build includes the fused loss, and with it
// the CPU row kernels and the ISA dispatch; nvcc must accept them (it gets the baseline vector width only).
#include "taxon/loss/cpu_kernels.hpp"

namespace taxon_cuda_check {

void cpu_rows(const float* dots, const float* inv_norm, const std::int64_t* labels, float* mx, float* sum, float* tc) {
  taxon::loss::MarginParams p;
  const taxon::loss::cpu::ChunkView view{inv_norm, labels, 16, 0, p};
  taxon::loss::cpu::forward_rows(dots, 0, 4, view, mx, sum, tc);
}

}  // namespace taxon_cuda_check

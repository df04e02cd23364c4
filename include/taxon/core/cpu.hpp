#pragma once
// Which SIMD variant of taxon's hand-vectorised CPU kernels (fused loss, image resampling) runs. Kernels are
// compiled for several instruction sets in one binary (GCC/Clang target attributes) and picked at run time, so a
// header-only build needs no -march flags. Plain C++ (no LibTorch): nvcc translation units may include it.
#include <cstdlib>
#include <string_view>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__CUDACC__)
#define TAXON_SIMD_X86_DISPATCH 1
#endif

namespace taxon::cpu {

// Instruction sets with a compiled variant, in increasing order; `TAXON_CPU_ISA=baseline|avx2|avx512|avx512_vnni`
// caps the choice (tests use it to run every variant the machine supports). avx512 means F, DQ, BW and VL
// (Skylake-X, Zen 4 and later); avx512_vnni adds VNNI dot products and VBMI byte permutes (Ice Lake, Zen 4 and later).
enum class Isa { baseline, avx2, avx512, avx512_vnni };

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512_vnni: return "avx512_vnni";
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "baseline";
  }
}

inline bool isa_supported(Isa isa) {
#if defined(TAXON_SIMD_X86_DISPATCH)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::avx512_vnni:
      return isa_supported(Isa::avx512) && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return true;
  }
#else
  return isa == Isa::baseline;
#endif
}

inline Isa detect_isa() {
  Isa cap = Isa::avx512_vnni;
  if (const char* env = std::getenv("TAXON_CPU_ISA")) {
    const std::string_view want(env);
    cap = want == "avx512_vnni" ? Isa::avx512_vnni
          : want == "avx512"    ? Isa::avx512
          : want == "avx2"      ? Isa::avx2
                                : Isa::baseline;
  }
  for (Isa isa : {Isa::avx512_vnni, Isa::avx512, Isa::avx2})
    if (static_cast<int>(isa) <= static_cast<int>(cap) && isa_supported(isa)) return isa;
  return Isa::baseline;
}

// Process-wide choice; `override_isa` lets a test pin a variant (must be supported).
inline Isa& active_isa_slot() {
  static Isa isa = detect_isa();
  return isa;
}
inline Isa active_isa() { return active_isa_slot(); }
// True when the active variant includes `isa` (variants are ordered).
inline bool active_at_least(Isa isa) { return static_cast<int>(active_isa()) >= static_cast<int>(isa); }
inline void override_isa(Isa isa) { active_isa_slot() = isa_supported(isa) ? isa : detect_isa(); }

}  // namespace taxon::cpu

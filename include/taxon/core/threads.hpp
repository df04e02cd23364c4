#pragma once
// LibTorch starts with ONE intra-op thread on small VMs; set the count explicitly and say which BLAS
// serves the matrix products (Debian's reference BLAS is ~18x slower than OpenBLAS).
#include "taxon/core/log.hpp"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>

#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>

extern "C" void sgemm_(...);  // Fortran BLAS entry point, resolved from libblas.so.3 via LibTorch/faiss.

namespace taxon {

// Path of the shared object that provides sgemm_ in this process, e.g. ".../openblas-pthread/libblas.so.3".
inline std::string blas_library() {
  void* sym = ::dlsym(RTLD_DEFAULT, "sgemm_");
  if (!sym) return "none";
  Dl_info info{};
  if (::dladdr(sym, &info) == 0 || !info.dli_fname) return "unknown";
  char resolved[4096];
  if (::realpath(info.dli_fname, resolved)) return resolved;
  return info.dli_fname;
}

inline std::string blas_name() {
  const std::string path = blas_library();
  if (path.find("openblas") != std::string::npos) return "OpenBLAS";
  if (path.find("mkl") != std::string::npos) return "MKL";
  if (path.find("blis") != std::string::npos) return "BLIS";
  if (path.find("/blas/") != std::string::npos) return "reference BLAS (slow)";
  return path;
}

// OpenBLAS's kernel family ("Haswell", "SkylakeX", ...), or "" when the BLAS in use is not OpenBLAS.
inline std::string blas_core() {
  using CoreName = char* (*)();
  auto* fn = reinterpret_cast<CoreName>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return fn ? std::string(fn()) : std::string();
}

// Advice when OpenBLAS runs AVX2 kernels on an AVX-512 CPU: 0.3.21 (Debian 12's) predates AMD Zen 4/5 and falls
// back to them, and some images force them with OPENBLAS_CORETYPE. Its SkylakeX kernels run sgemm ~1.8x faster
// there (measured on this project's Zen VM). OpenBLAS reads the variable when it loads, so only a restart applies it.
inline std::string openblas_core_hint(std::string_view core, bool cpu_has_avx512, std::string_view forced = {}) {
  if (!cpu_has_avx512) return {};
  for (std::string_view avx2_core : {"Haswell", "Zen", "Sandybridge"}) {
    if (core.size() != avx2_core.size() ||
        !std::equal(core.begin(), core.end(), avx2_core.begin(), [](char a, char b) { return (a | 32) == (b | 32); }))
      continue;
    const std::string why = forced.empty() ? "OpenBLAS chose its " + std::string(core) + " kernels"
                                           : "OPENBLAS_CORETYPE=" + std::string(forced) + " selects AVX2 kernels";
    return why + " on this AVX-512 CPU; OPENBLAS_CORETYPE=SkylakeX at start-up makes matrix products ~1.8x faster";
  }
  return {};
}

// The hint for this process (empty when nothing to say).
inline std::string blas_core_hint();

inline bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

inline std::string blas_core_hint() {
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  return openblas_core_hint(blas_core(), cpu_has_avx512(), forced ? forced : "");
}

// "OpenBLAS (SkylakeX)", "MKL", ...
inline std::string blas_description() {
  const std::string core = blas_core();
  return core.empty() ? blas_name() : blas_name() + " (" + core + ")";
}

// Threads to use: TAXON_NUM_THREADS, else OMP_NUM_THREADS, else all hardware threads.
inline int default_thread_count() {
  for (const char* var : {"TAXON_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* env = std::getenv(var)) {
      const int n = std::atoi(env);
      if (n > 0) return n;
    }
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

// Sets LibTorch's intra-op thread count (n <= 0: default_thread_count()) and logs it with the BLAS in use.
inline int configure_threads(int n = 0, bool announce = true) {
  if (n <= 0) n = default_thread_count();
  at::set_num_threads(n);
  if (announce) {
    log::info("threads: ", at::get_num_threads(), " intra-op, BLAS: ", blas_description());
    const std::string hint = blas_core_hint();
    if (!hint.empty()) log::warn(hint);
  }
  return at::get_num_threads();
}

}  // namespace taxon

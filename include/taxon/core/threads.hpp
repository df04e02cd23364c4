#pragma once
// LibTorch starts with ONE intra-op thread on small VMs; set the count explicitly and say which BLAS
// serves the matrix products (Debian's reference BLAS is ~18x slower than OpenBLAS).
#include "taxon/core/log.hpp"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <cstdlib>
#include <string>
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
  if (announce) log::info("threads: ", at::get_num_threads(), " intra-op, BLAS: ", blas_name());
  return at::get_num_threads();
}

}  // namespace taxon

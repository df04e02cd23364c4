# Optional taxon::cuda component: the fused CUDA kernels, compiled once by nvcc into a small static library that
# exposes plain C++ launchers, so a consumer's LibTorch code stays ordinary C++ for g++/clang. Needs nvcc AND a
# CUDA-enabled LibTorch.
include_guard(GLOBAL)

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "[taxon] TAXON_WITH_CUDA=ON but no CUDA compiler (nvcc) was found. "
                      "Install the CUDA Toolkit or set CMAKE_CUDA_COMPILER=/path/to/nvcc.")
endif()
if(NOT TAXON_TORCH_HAS_CUDA)
  message(FATAL_ERROR "[taxon] TAXON_WITH_CUDA=ON needs a CUDA-enabled LibTorch, but the one found "
                      "(${Torch_DIR}, version ${TAXON_TORCH_VERSION}) is CPU-only (Debian's libtorch-dev is). "
                      "Point CMake at a CUDA build, e.g. the one scripts/torch2-venv installs:\n"
                      "  cmake -DTAXON_WITH_CUDA=ON -DCMAKE_PREFIX_PATH=$(scripts/torch2-venv) ..\n"
                      "or -DTAXON_TORCH_PYTHON=python3, or -DTorch_DIR=/path/to/libtorch/share/cmake/Torch.")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

add_library(taxon_cuda STATIC ${PROJECT_SOURCE_DIR}/src/cuda/fused_margin_ce.cu)
add_library(taxon::cuda ALIAS taxon_cuda)
set_target_properties(taxon_cuda PROPERTIES EXPORT_NAME cuda OUTPUT_NAME taxon_cuda
  POSITION_INDEPENDENT_CODE ON
  # One CUDA runtime in the process: LibTorch's (shared), not a static copy with its own state.
  CUDA_RUNTIME_LIBRARY Shared
  # Set on the target: LibTorch's CMake config resets CMAKE_CUDA_ARCHITECTURES to OFF.
  CUDA_ARCHITECTURES "${TAXON_CUDA_ARCHITECTURES}")
target_compile_features(taxon_cuda PRIVATE cuda_std_17)
target_include_directories(taxon_cuda PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_compile_options(taxon_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
# Consumers see TAXON_WITH_CUDA (fused.hpp then routes CUDA tensors to the launchers) and link the CUDA runtime.
target_compile_definitions(taxon_cuda INTERFACE TAXON_WITH_CUDA=1)
target_link_libraries(taxon_cuda INTERFACE taxon::taxon CUDA::cudart)
message(STATUS "[taxon] taxon::cuda: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${TAXON_CUDA_ARCHITECTURES}")

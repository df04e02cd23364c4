# Optional taxon::cuda component: fused CUDA kernels. Needs nvcc AND a CUDA-enabled LibTorch.
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
                      "Point CMake at a CUDA build, e.g. the one inside pip's torch:\n"
                      "  cmake -DTAXON_WITH_CUDA=ON -DCMAKE_PREFIX_PATH=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)') ..\n"
                      "or -DTAXON_TORCH_PYTHON=python3, or -DTorch_DIR=/path/to/libtorch/share/cmake/Torch.")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

add_library(taxon_cuda INTERFACE)
add_library(taxon::cuda ALIAS taxon_cuda)
set_target_properties(taxon_cuda PROPERTIES EXPORT_NAME cuda)
target_link_libraries(taxon_cuda INTERFACE taxon::taxon CUDA::cudart)
target_compile_definitions(taxon_cuda INTERFACE TAXON_WITH_CUDA=1)

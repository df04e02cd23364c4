# The one place that knows LibTorch's variable-style config (TORCH_LIBRARIES / TORCH_CXX_FLAGS).
# It leaves a usable `torch` target behind for both Debian's LibTorch 1.13 (CPU) and a pip/NGC LibTorch 2.x.
include_guard(GLOBAL)

if(NOT Torch_DIR)
  # A pip-installed torch ships its CMake config inside the wheel; let users point at it via TAXON_TORCH_PYTHON.
  if(TAXON_TORCH_PYTHON)
    execute_process(COMMAND ${TAXON_TORCH_PYTHON} -c "import torch;print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _taxon_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _taxon_rc)
    if(_taxon_rc EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH "${_taxon_torch_prefix}")
    endif()
  endif()
endif()

find_package(Torch REQUIRED)

# TorchConfig decorates the imported `torch` target with include dirs and flags but gives no namespace or
# version variable on 1.13; record what we found for the compat header and the build log.
if(NOT TARGET torch)
  message(FATAL_ERROR "[taxon] find_package(Torch) succeeded but defined no `torch` target")
endif()
set(TAXON_TORCH_VERSION "${Torch_VERSION}")
if(NOT TAXON_TORCH_VERSION)
  set(TAXON_TORCH_VERSION "unknown")
endif()

# Torch with CUDA defines these targets/variables; CPU builds (Debian) have neither.
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(TAXON_TORCH_HAS_CUDA ON)
else()
  set(TAXON_TORCH_HAS_CUDA OFF)
endif()
message(STATUS "[taxon] LibTorch ${TAXON_TORCH_VERSION} (CUDA: ${TAXON_TORCH_HAS_CUDA}), flags: ${TORCH_CXX_FLAGS}")

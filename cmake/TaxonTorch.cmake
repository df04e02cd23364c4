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

if(TAXON_WITH_CUDA)
  # A100 (sm_80) and H100/H200 (sm_90) machine code for taxon::cuda. LibTorch's config otherwise probes for a GPU
  # and, finding none, lists architectures back to sm_50, which CUDA 13 no longer compiles.
  set(TAXON_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures of the taxon::cuda kernels")
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST "")
    foreach(_arch IN LISTS TAXON_CUDA_ARCHITECTURES)
      string(REGEX REPLACE "([0-9]+)([0-9])$" "\\1.\\2" _arch "${_arch}")
      list(APPEND TORCH_CUDA_ARCH_LIST "${_arch}")
    endforeach()
  endif()
endif()

# TorchConfig looks its libraries up with find_library, whose system folders come before LibTorch's own lib/: on a
# machine that also has Debian's LibTorch in /usr/lib, a pip LibTorch would pick up Debian's libtorch.so/libc10.so.
# Putting the root of the LibTorch being configured in front of the search keeps the two apart.
set(_taxon_torch_configs "")
if(Torch_DIR)
  list(APPEND _taxon_torch_configs "${Torch_DIR}")
endif()
foreach(_taxon_prefix IN LISTS CMAKE_PREFIX_PATH)  # the torch.utils.cmake_prefix_path form: <root>/share/cmake
  list(APPEND _taxon_torch_configs "${_taxon_prefix}/Torch")
endforeach()
foreach(_taxon_config IN LISTS _taxon_torch_configs)
  get_filename_component(_taxon_torch_root "${_taxon_config}/../../.." ABSOLUTE)
  if(EXISTS "${_taxon_config}/TorchConfig.cmake" AND EXISTS "${_taxon_torch_root}/lib/libc10.so")
    list(PREPEND CMAKE_PREFIX_PATH "${_taxon_torch_root}")
    break()
  endif()
endforeach()

find_package(Torch REQUIRED)

foreach(_taxon_lib IN ITEMS TORCH_LIBRARY c10_LIBRARY)
  if(${_taxon_lib} AND NOT "${${_taxon_lib}}" MATCHES "^${TORCH_INSTALL_PREFIX}/")
    message(FATAL_ERROR "[taxon] LibTorch at ${TORCH_INSTALL_PREFIX} resolved ${_taxon_lib} to ${${_taxon_lib}}, a "
                        "different LibTorch: two LibTorch installations would mix. Configure a fresh build folder "
                        "with -DTorch_DIR=${TORCH_INSTALL_PREFIX}/share/cmake/Torch.")
  endif()
endforeach()

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

# c10d backends for taxon/dist/process_group.hpp. LibTorch's config passes none of the USE_C10D_* switches its own
# build used, and ProcessGroupGloo.hpp / ProcessGroupNCCL.hpp compile to nothing without them. Gloo: Debian's
# LibTorch 1.13 and pip's 2.x both export ProcessGroupGloo but neither ships gloo's headers (Debian: libgloo-dev).
# NCCL: only a CUDA LibTorch, with nccl.h from pip's nvidia-nccl wheel or the CUDA toolkit.
set(TAXON_C10D_DEFINITIONS "")
set(TAXON_C10D_INCLUDE_DIRS "")
find_path(TAXON_C10D_HEADERS torch/csrc/distributed/c10d/ProcessGroupGloo.hpp HINTS ${TORCH_INCLUDE_DIRS} NO_DEFAULT_PATH)
find_path(TAXON_GLOO_INCLUDE_DIR gloo/config.h HINTS ${TORCH_INCLUDE_DIRS})
if(TAXON_C10D_HEADERS AND TAXON_GLOO_INCLUDE_DIR)
  list(APPEND TAXON_C10D_DEFINITIONS USE_C10D_GLOO TAXON_WITH_GLOO=1)
  list(APPEND TAXON_C10D_INCLUDE_DIRS ${TAXON_GLOO_INCLUDE_DIR})
  set(TAXON_HAS_GLOO ON)
else()
  set(TAXON_HAS_GLOO OFF)
endif()
set(TAXON_HAS_NCCL OFF)
if(TAXON_TORCH_HAS_CUDA AND TAXON_C10D_HEADERS)
  get_filename_component(_taxon_site "${TORCH_INSTALL_PREFIX}/.." ABSOLUTE)
  find_path(TAXON_NCCL_INCLUDE_DIR nccl.h HINTS ${_taxon_site}/nvidia/nccl/include ${CUDAToolkit_INCLUDE_DIRS}
            /usr/local/cuda/include)
  if(TAXON_NCCL_INCLUDE_DIR)
    list(APPEND TAXON_C10D_DEFINITIONS USE_C10D_NCCL TAXON_WITH_NCCL=1)
    list(APPEND TAXON_C10D_INCLUDE_DIRS ${TAXON_NCCL_INCLUDE_DIR})
    set(TAXON_HAS_NCCL ON)
  endif()
endif()
list(REMOVE_ITEM TAXON_C10D_INCLUDE_DIRS /usr/include)  # a system folder as -isystem would reorder libstdc++'s
message(STATUS "[taxon] c10d backends: Gloo ${TAXON_HAS_GLOO}, NCCL ${TAXON_HAS_NCCL}")

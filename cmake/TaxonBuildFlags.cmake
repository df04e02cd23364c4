# Flags for taxon's own tests/examples/benchmarks (never exported to consumers).
include_guard(GLOBAL)

if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  # Optimised but without -g: debug info roughly doubles LibTorch-heavy build times.
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()

# lld links LibTorch binaries ~5x faster than GNU ld.
find_program(TAXON_LLD ld.lld)
if(TAXON_LLD)
  set(TAXON_LINKER_FLAGS -fuse-ld=lld)
endif()

function(taxon_internal_target target)
  target_link_libraries(${target} PRIVATE taxon::taxon)
  # In a TAXON_WITH_CUDA build every test, example and benchmark gets the CUDA kernels (plain C++ launchers).
  if(TARGET taxon::cuda)
    target_link_libraries(${target} PRIVATE taxon::cuda)
  endif()
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(TAXON_LINKER_FLAGS)
    target_link_options(${target} PRIVATE ${TAXON_LINKER_FLAGS})
  endif()
endfunction()

# Test programs check behaviour, not speed (bench/ does), and LibTorch's inline code makes -O3 about two thirds of
# their compile time; the examples the end-to-end tests run stay optimised. Their numeric checks hold at any level
# (no -ffast-math, no FMA contraction on the x86-64 baseline).
set(TAXON_TEST_OPT_FLAGS "-O0" CACHE STRING "Optimisation flags of the test programs (appended after the build type's)")
function(taxon_test_target target)
  taxon_internal_target(${target})
  separate_arguments(_opt UNIX_COMMAND "${TAXON_TEST_OPT_FLAGS}")
  target_compile_options(${target} PRIVATE ${_opt})
endfunction()

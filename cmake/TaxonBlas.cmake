# Reports which BLAS LibTorch and faiss will reach through libblas.so.3 at run time.
# Debian's reference BLAS is ~18x slower than OpenBLAS for the matrix products that dominate training.
include_guard(GLOBAL)

function(taxon_report_blas)
  find_library(_taxon_libblas NAMES libblas.so.3 blas PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE})
  if(NOT _taxon_libblas)
    message(STATUS "[taxon] BLAS: libblas.so.3 not found")
    return()
  endif()
  get_filename_component(_real "${_taxon_libblas}" REALPATH)
  if(_real MATCHES "openblas")
    message(STATUS "[taxon] BLAS: OpenBLAS (${_real})")
  elseif(_real MATCHES "mkl")
    message(STATUS "[taxon] BLAS: MKL (${_real})")
  else()
    message(WARNING "[taxon] BLAS: ${_real} is not OpenBLAS; matrix products run ~18x slower. "
                    "Run scripts/install-deps (it installs libopenblas0-pthread and selects it).")
  endif()
  set(TAXON_BLAS_PATH "${_real}" CACHE INTERNAL "BLAS that libblas.so.3 resolves to")
endfunction()

# Finds taxon's dependencies once, in the order their CMake configs require.
include_guard(GLOBAL)

include(TaxonTorch)

# A pip LibTorch ships its own libgomp.so.1 beside libtorch_cpu.so; two files of one SONAME cannot both load, and
# the rpath would pick LibTorch's anyway. Link taxon's and faiss's OpenMP code against that copy: one runtime.
if(TORCH_INSTALL_PREFIX AND EXISTS "${TORCH_INSTALL_PREFIX}/lib/libgomp.so.1")
  set(OpenMP_gomp_LIBRARY "${TORCH_INSTALL_PREFIX}/lib/libgomp.so.1" CACHE FILEPATH "LibTorch's OpenMP runtime")
endif()
# Debian's faiss config references OpenMP::OpenMP_CXX without finding it: OpenMP must come first.
find_package(OpenMP REQUIRED)
find_package(faiss REQUIRED)
find_package(Eigen3 3.3 REQUIRED NO_MODULE)
find_package(nlohmann_json 3 REQUIRED)
find_package(PNG REQUIRED)
find_package(JPEG REQUIRED)
find_package(ZLIB REQUIRED)

include(TaxonBlas)
taxon_report_blas()

# Imported targets are directory-scoped: when a consumer uses add_subdirectory(taxon), its own directory
# must still see torch/torch_cpu/faiss/... that taxon::taxon links to, so make them global.
get_property(_taxon_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
foreach(_t IN LISTS _taxon_imported)
  get_target_property(_is_global ${_t} IMPORTED_GLOBAL)
  if(NOT _is_global)
    set_property(TARGET ${_t} PROPERTY IMPORTED_GLOBAL TRUE)
  endif()
endforeach()

# Finds taxon's dependencies once, in the order their CMake configs require.
include_guard(GLOBAL)

include(TaxonTorch)

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

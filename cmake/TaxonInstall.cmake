# Install rules, exported targets and a relocatable package config for find_package(taxon).
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(TAXON_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/taxon)

install(TARGETS taxon EXPORT taxonTargets)
install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT taxonTargets NAMESPACE taxon:: DESTINATION ${TAXON_CMAKE_DIR})
export(EXPORT taxonTargets NAMESPACE taxon:: FILE ${CMAKE_CURRENT_BINARY_DIR}/taxonTargets.cmake)

if(TAXON_WITH_CUDA)
  install(TARGETS taxon_cuda EXPORT taxonCudaTargets)
  install(EXPORT taxonCudaTargets NAMESPACE taxon:: DESTINATION ${TAXON_CMAKE_DIR})
endif()

set(TAXON_BUILT_WITH_CUDA ${TAXON_WITH_CUDA})
configure_package_config_file(cmake/taxonConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/taxonConfig.cmake
  INSTALL_DESTINATION ${TAXON_CMAKE_DIR})
# Header-only: a 64-bit build's package is usable by a 32-bit consumer, so skip the pointer-size check.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/taxonConfigVersion.cmake
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/taxonConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/taxonConfigVersion.cmake
  cmake/TaxonTorch.cmake DESTINATION ${TAXON_CMAKE_DIR})
# taxon_precompile_headers(), loaded by taxonConfig.cmake.
install(FILES cmake/TaxonPrecompile.cmake DESTINATION ${TAXON_CMAKE_DIR})

# taxon_precompile_headers(<target> [HEADERS <header>...])
# Precompiles taxon's umbrella header (or the given taxon headers, e.g. taxon/train/train.hpp) for <target>, so its
# translation units stop re-parsing LibTorch and taxon one by one: with several TUs it saves ~20 s CPU each. Worth
# it for targets of two or more TUs; a one-file program only pays for building the precompiled header.
# Shipped with the package config, so after find_package(taxon) (or add_subdirectory) it is one line.
include_guard(GLOBAL)

function(taxon_precompile_headers target)
  cmake_parse_arguments(PARSE_ARGV 1 _arg "" "" "HEADERS")
  if(_arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "taxon_precompile_headers(${target}): unexpected arguments ${_arg_UNPARSED_ARGUMENTS}; "
                        "usage: taxon_precompile_headers(<target> [HEADERS <header>...])")
  endif()
  if(NOT TARGET ${target})
    message(FATAL_ERROR "taxon_precompile_headers: ${target} is not a target")
  endif()
  set(_headers ${_arg_HEADERS})
  if(NOT _headers)
    set(_headers taxon/taxon.hpp)
  endif()
  list(TRANSFORM _headers PREPEND "<")
  list(TRANSFORM _headers APPEND ">")
  target_precompile_headers(${target} PRIVATE ${_headers})
endfunction()

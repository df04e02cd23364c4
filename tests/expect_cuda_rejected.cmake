# taxon_tests holds no [cuda] tests: a filter asking for them must exit non-zero with [taxon.cuda.wrong-binary],
# never pass by matching nothing.
foreach(_filter "[cuda]" "[loss][cuda]")
  execute_process(COMMAND ${BINARY} ${_filter} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
  if(_rc EQUAL 0 OR NOT _err MATCHES "\\[taxon\\.cuda\\.wrong-binary\\]")
    message(FATAL_ERROR "taxon_tests '${_filter}': exit ${_rc}, expected a failure naming taxon.cuda.wrong-binary:\n${_out}${_err}")
  endif()
endforeach()
execute_process(COMMAND ${BINARY} --list-test-names-only "[cuda]" OUTPUT_VARIABLE _listed)
string(STRIP "${_listed}" _listed)
if(NOT _listed STREQUAL "")
  message(FATAL_ERROR "[cuda] tests in taxon_tests belong in tests/gpu:\n${_listed}")
endif()

# taxon-eval on the label-cleaning fixture (padded taxa, blank species): the table must equal the seeds' table
# (tests/data/label_cleaning/make_golden.py) byte for byte, the JSON beside it must report the cleaning, and
# every Recall@K line must name its definition. The second run reads the group from a column named `category`
# (the packaged eval_utils.py's name): the All row's label column is still `taxa`, as in the seeds' table.
set(_dir ${SRC}/tests/data/label_cleaning)
file(MAKE_DIRECTORY ${WORK})
file(READ ${_dir}/fixture.csv _csv)
string(REPLACE "image_name,scientificName,taxa\n" "image_name,scientificName,category\n" _csv "${_csv}")
file(WRITE ${WORK}/fixture-category.csv "${_csv}")
set(_labels_pml ${_dir}/fixture.csv)
set(_group_pml taxa)
set(_labels_unicom ${WORK}/fixture-category.csv)
set(_group_unicom category)
foreach(_definition pml unicom)
  execute_process(COMMAND ${EXE} --device cpu --embeddings ${_dir}/embeddings.npy --labels ${_labels_${_definition}}
                          --group-column ${_group_${_definition}} --rank species=scientificName
                          "--rank" "genus=@genus(scientificName)"
                          --model trained_vlm_unicom --seed 7 --nfhm-compat --recall-definition ${_definition}
                          --out ${WORK}/table-${_definition}.csv
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}")
  if(rc)
    message(FATAL_ERROR "taxon-eval failed (${rc}): ${err}")
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${WORK}/table-${_definition}.csv ${_dir}/expected_table.csv
                  RESULT_VARIABLE differ)
  if(differ)
    file(READ ${WORK}/table-${_definition}.csv _got)
    message(FATAL_ERROR "the table differs from the seeds' (expected_table.csv):\n${_got}")
  endif()
  file(READ ${WORK}/table-${_definition}.json _json)
  string(JSON _dropped GET "${_json}" label_cleaning rows_dropped)
  string(JSON _rewritten GET "${_json}" label_cleaning taxa_rewritten)
  string(JSON _def GET "${_json}" retrieval recall_definition)
  if(NOT _dropped EQUAL 4 OR NOT _rewritten EQUAL 55 OR NOT _def STREQUAL _definition)
    message(FATAL_ERROR "table-${_definition}.json: rows_dropped ${_dropped} (4), taxa_rewritten ${_rewritten} (55), "
                        "recall_definition ${_def} (${_definition})")
  endif()
  if(NOT out MATCHES "Recall@K definition: ${_definition} \\(" OR NOT err MATCHES "4 of 80 rows dropped")
    message(FATAL_ERROR "expected the Recall@K definition line and the label-cleaning log line")
  endif()
endforeach()

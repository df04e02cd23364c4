# taxon-embed on the text fixture's 40 generated PNGs (FX: clip.safetensors, meta.csv, img/N.png):
#   1. CSV, batches of 7 (the last one partial) on 2 loader threads: embeddings [40, D], a CSV of 40 rows in meta.csv's
#      order with path + one column per --rank, and taxon-eval reads the pair;
#   2. row order: a CSV listing img/33.png then img/5.png gives exactly rows 33 and 5 of the full run, in that order;
#      taxon-eval with both runs as named models writes one table with a block of rows per model;
#   3. a folder dataset (one sub-folder per class): rows in sorted path order, a "class" column;
#   4. an unreadable image stops the run with its path (dropping it would shift every later row).
cmake_minimum_required(VERSION 3.21)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(_common --weights ${FX}/clip.safetensors --device cpu --threads 1)

function(run_ok)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(_out "${out}" PARENT_SCOPE)
  set(_err "${err}" PARENT_SCOPE)
endfunction()

# Rows and columns of an .npy of float32 (header "'shape': (N, D)"), and where its data starts, in hex digits.
function(npy_info file prefix)
  file(READ ${file} _hex HEX)
  file(READ ${file} _head OFFSET 10 LIMIT 118)  # past the magic and version, which hold NUL bytes
  if(NOT _head MATCHES "'descr': '<f4'" OR NOT _head MATCHES "'shape': \\(([0-9]+), ([0-9]+)\\)")
    message(FATAL_ERROR "${file}: not a 2-D float32 .npy: ${_head}")
  endif()
  set(${prefix}_rows ${CMAKE_MATCH_1} PARENT_SCOPE)
  set(${prefix}_dim ${CMAKE_MATCH_2} PARENT_SCOPE)
  string(SUBSTRING "${_hex}" 16 2 _lo)
  string(SUBSTRING "${_hex}" 18 2 _hi)
  math(EXPR _data "(10 + 0x${_lo} + 256 * 0x${_hi}) * 2")
  set(${prefix}_hex "${_hex}" PARENT_SCOPE)
  set(${prefix}_data ${_data} PARENT_SCOPE)
endfunction()

function(npy_row prefix row out_var)
  math(EXPR _at "${${prefix}_data} + ${row} * ${${prefix}_dim} * 8")
  math(EXPR _len "${${prefix}_dim} * 8")
  string(SUBSTRING "${${prefix}_hex}" ${_at} ${_len} _bytes)
  set(${out_var} "${_bytes}" PARENT_SCOPE)
endfunction()

# 1. The CSV dataset.
set(_csv_args --dataset csv --csv ${FX}/meta.csv --images ${FX} --path-column file --rank species=scientificName
              --rank taxa=taxa)
run_ok(${EMBED} ${_csv_args} ${_common} --batch-size 7 --workers 2 --output ${WORK}/csv/emb.npy)
if(NOT _err MATCHES "plan: embed 40 images" OR NOT _out MATCHES "embeddings: [^\n]*emb.npy \\[40, [0-9]+\\]")
  message(FATAL_ERROR "taxon-embed did not announce 40 images and an [40, D] output:\n${_out}\n${_err}")
endif()
npy_info(${WORK}/csv/emb.npy full)
if(NOT full_rows EQUAL 40)
  message(FATAL_ERROR "expected 40 embeddings, got ${full_rows}")
endif()
file(STRINGS ${WORK}/csv/emb.csv _lines)
list(LENGTH _lines _n)
list(GET _lines 0 _header)
if(NOT _n EQUAL 41 OR NOT _header STREQUAL "path,species,taxa")
  message(FATAL_ERROR "emb.csv: expected header 'path,species,taxa' and 40 rows, got '${_header}' and ${_n} lines")
endif()
foreach(i RANGE 39)
  math(EXPR _line "${i} + 1")
  list(GET _lines ${_line} _row)
  if(NOT _row MATCHES "^img/${i}\\.png,[A-Z][a-z]+ [a-z]+,[A-Za-z]+$")
    message(FATAL_ERROR "emb.csv row ${i} should name img/${i}.png with its species and taxa, got '${_row}'")
  endif()
endforeach()
run_ok(${EVAL} --embeddings ${WORK}/csv/emb.npy --labels ${WORK}/csv/emb.csv --rank species=species
               --group-column taxa --device cpu)
if(NOT _out MATCHES "model,taxa,column,accuracy_individual")
  message(FATAL_ERROR "taxon-eval did not print the table for taxon-embed's output:\n${_out}")
endif()

# 2. Row order, one image per batch in both runs (identical arithmetic per row, so identical bytes).
run_ok(${EMBED} ${_csv_args} ${_common} --batch-size 1 --workers 1 --output ${WORK}/one/all.npy)
file(WRITE ${WORK}/two.csv "file,scientificName,taxa\nimg/33.png,Xus yus,A\nimg/5.png,Zus wus,B\n")
run_ok(${EMBED} --dataset csv --csv ${WORK}/two.csv --images ${FX} --path-column file --rank species=scientificName
               ${_common} --batch-size 1 --workers 2 --output ${WORK}/two/two.npy --ids ${WORK}/two/rows.csv)
npy_info(${WORK}/one/all.npy all)
npy_info(${WORK}/two/two.npy two)
if(NOT two_rows EQUAL 2 OR NOT two_dim EQUAL all_dim)
  message(FATAL_ERROR "two.npy: expected [2, ${all_dim}], got [${two_rows}, ${two_dim}]")
endif()
foreach(pair "0;33" "1;5")
  list(GET pair 0 _r)
  list(GET pair 1 _image)
  npy_row(two ${_r} _got)
  npy_row(all ${_image} _want)
  if(NOT _got STREQUAL _want)
    message(FATAL_ERROR "row ${_r} of two.npy is not the embedding of img/${_image}.png (row ${_image} of all.npy)")
  endif()
endforeach()
file(READ ${WORK}/two/rows.csv _rows)
if(NOT _rows STREQUAL "path,species\nimg/33.png,Xus yus\nimg/5.png,Zus wus\n")
  message(FATAL_ERROR "rows.csv:\n${_rows}")
endif()

# taxon-eval with two named embeddings files: one table, a block of rows per model; names are required then.
run_ok(${EVAL} --embeddings batch7=${WORK}/csv/emb.npy --embeddings batch1=${WORK}/one/all.npy --labels ${WORK}/csv/emb.csv
               --rank species=species --group-column taxa --device cpu --out ${WORK}/two-models.csv)
file(STRINGS ${WORK}/two-models.csv _table)
list(LENGTH _table _n)
list(FILTER _table INCLUDE REGEX "^batch7,")
list(LENGTH _table _n7)
file(STRINGS ${WORK}/two-models.csv _table)
list(FILTER _table INCLUDE REGEX "^batch1,")
list(LENGTH _table _n1)
math(EXPR _expected "1 + 2 * ${_n7}")
if(_n7 LESS 1 OR NOT _n1 EQUAL _n7 OR NOT _n EQUAL _expected OR NOT _out MATCHES "batch1 species leave-one-out")
  message(FATAL_ERROR "two-models.csv: expected a header and as many batch7 as batch1 rows, got ${_n} lines "
                      "(${_n7} batch7, ${_n1} batch1):\n${_out}")
endif()
execute_process(COMMAND ${EVAL} --embeddings ${WORK}/csv/emb.npy --embeddings ${WORK}/one/all.npy --labels ${WORK}/csv/emb.csv
                        --rank species=species RESULT_VARIABLE rc ERROR_VARIABLE err OUTPUT_QUIET)
if(NOT rc EQUAL 2 OR NOT err MATCHES "\\[taxon\\.cli\\.bad-option\\].*NAME=PATH")
  message(FATAL_ERROR "two unnamed --embeddings should be refused with cli.bad-option, got ${rc}: ${err}")
endif()

# 3. A folder dataset: class sub-folders, rows sorted by path.
foreach(i RANGE 5)
  math(EXPR _class "${i} % 2")
  file(COPY ${FX}/img/${i}.png DESTINATION ${WORK}/folder/class${_class})
endforeach()
run_ok(${EMBED} --dataset folder --images ${WORK}/folder ${_common} --output ${WORK}/folder-out/e.npy)
npy_info(${WORK}/folder-out/e.npy folder)
file(READ ${WORK}/folder-out/e.csv _rows)
set(_want "path,class\nclass0/0.png,class0\nclass0/2.png,class0\nclass0/4.png,class0\nclass1/1.png,class1\nclass1/3.png,class1\nclass1/5.png,class1\n")
if(NOT folder_rows EQUAL 6 OR NOT _rows STREQUAL _want)
  message(FATAL_ERROR "folder: expected 6 rows in sorted order, got ${folder_rows}:\n${_rows}")
endif()

# 4. An unreadable image.
file(WRITE ${WORK}/folder/class1/broken.png "not a png")
execute_process(COMMAND ${EMBED} --dataset folder --images ${WORK}/folder ${_common} --output ${WORK}/bad/e.npy
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR rc GREATER 2 OR NOT err MATCHES "broken\\.png" OR EXISTS ${WORK}/bad/e.npy)
  message(FATAL_ERROR "an unreadable image should stop taxon-embed (exit 2, naming it, no output); got ${rc}:\n${err}")
endif()
message(STATUS "taxon-embed: [40, ${full_dim}] from the CSV, rows in order, folder sorted, broken image refused")

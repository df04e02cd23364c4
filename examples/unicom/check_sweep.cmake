# taxon-unicom --cluster-ratio A,B,C on a small Fashion-MNIST subset: one run directory per ratio, every one from the
# same starting model (the training images are embedded once), then RUN/sweep.csv with one row per ratio and
# RUN/report.html with the sweep chart (one Recall@1 and one MAP@R bar per ratio). Then a value killed before its end
# is resumed by --resume (not retrained: its round finished) while the finished ones are not touched, and
# taxon-report rewrites the sweep report.
# Variables: EXE (taxon-unicom), REPORT_EXE (taxon-report), RUN.
cmake_minimum_required(VERSION 3.21)
file(REMOVE_RECURSE ${RUN})
set(ENV{TAXON_NUM_THREADS} 2)
set(ENV{CUDA_VISIBLE_DEVICES} -1)
set(_ratios 0.1 0.05 0.02)
execute_process(COMMAND ${EXE} --train-limit 256 --eval-limit 160 --epochs 1 --batch-size 64 --kmeans-iters 5
                        --workers 1 --cluster-ratio 0.1,0.05,0.02 --progress-every 25% --run-dir ${RUN}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the sweep failed (${rc}):\n${err}")
endif()

function(check_sweep_outputs what)
  file(STRINGS ${RUN}/sweep.csv _lines)
  list(LENGTH _lines _n)
  list(GET _lines 0 _header)
  if(NOT _n EQUAL 4 OR NOT _header MATCHES "^cluster_ratio,run,pseudo_classes,finished,recall_at_1,")
    message(FATAL_ERROR "${what}: sweep.csv should hold a header and 3 rows, got ${_n} lines:\n${_lines}")
  endif()
  set(_i 1)
  foreach(_r IN LISTS _ratios)
    list(GET _lines ${_i} _row)
    if(NOT _row MATCHES "^${_r},ratio-${_r},[0-9]+,yes,0\\.[0-9]+,")
      message(FATAL_ERROR "${what}: sweep.csv row ${_i} should be ratio ${_r}, finished, with Recall@1: '${_row}'")
    endif()
    if(NOT EXISTS ${RUN}/ratio-${_r}/model.safetensors OR NOT EXISTS ${RUN}/ratio-${_r}/report.html)
      message(FATAL_ERROR "${what}: ${RUN}/ratio-${_r} lacks model.safetensors or report.html")
    endif()
    math(EXPR _i "${_i} + 1")
  endforeach()
  file(READ ${RUN}/report.html _html)
  if(NOT _html MATCHES "<figure class=\"chart\" id=\"sweep-chart\" data-marks=\"6\"")
    message(FATAL_ERROR "${what}: report.html has no sweep chart with 6 bars (Recall@1 and MAP@R for 3 ratios)")
  endif()
  string(REGEX MATCHALL "<title>Recall@1 · ratio [0-9.]+ \\(k=[0-9]+\\): [0-9.]+%</title>" _points "${_html}")
  list(LENGTH _points _np)
  if(NOT _np EQUAL 3)
    message(FATAL_ERROR "${what}: the sweep chart should show 3 Recall@1 values, found ${_np}")
  endif()
endfunction()

check_sweep_outputs("sweep")
if(NOT out MATCHES "sweep table: [^\n]*sweep.csv" OR NOT out MATCHES "report: [^\n]*report.html")
  message(FATAL_ERROR "the sweep should end by printing where sweep.csv and report.html are")
endif()
# Embedded once: the starting model embeds the 256 training images for the first ratio only.
string(REGEX MATCHALL "embed train 256/256 \\(100%\\)" _embeds "${err}")
list(LENGTH _embeds _ne)
string(REGEX MATCHALL "plan: [^\n]*" _plan "${err}")
if(NOT _ne EQUAL 1 OR NOT err MATCHES "computed for an earlier value of the sweep" OR NOT _plan)
  message(FATAL_ERROR "expected one embedding of the training images, reuse for the other ratios and a plan; got ${_ne}")
endif()
# Progress off a terminal (--progress-every 25%): intermediate lines before the summary of the embedding.
if(NOT err MATCHES "embed train [0-9]+/256 \\([0-9]+%\\) [0-9.]+ img/s elapsed [0-9:]+ eta [0-9:]+")
  message(FATAL_ERROR "no intermediate progress line for 'embed train' off a terminal")
endif()

# The last value as if killed during its final evaluation (its round is done): --resume finishes it, without
# retraining, and leaves the finished values alone.
file(READ ${RUN}/ratio-0.02/timings.json _timings)
string(REPLACE "\"finished\"" "\"running\"" _timings "${_timings}")
file(WRITE ${RUN}/ratio-0.02/timings.json "${_timings}")
file(REMOVE ${RUN}/sweep.csv)
execute_process(COMMAND ${EXE} --resume ${RUN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the resumed sweep failed (${rc}):\n${err}")
endif()
if(NOT err MATCHES "ratio-0\\.1 finished earlier; not redone" OR NOT err MATCHES "ratio-0\\.05 finished earlier; not redone"
   OR NOT err MATCHES "sweep 3/3: ratio-0\\.02\n" OR err MATCHES "train round-0")
  message(FATAL_ERROR "the resumed sweep should skip ratio-0.1 and ratio-0.05 and finish ratio-0.02 without training:\n${err}")
endif()
check_sweep_outputs("resumed sweep")

execute_process(COMMAND ${REPORT_EXE} ${RUN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "report: [^\n]*/report.html")
  message(FATAL_ERROR "taxon-report on the sweep failed (${rc}): ${out}${err}")
endif()
check_sweep_outputs("taxon-report")
message(STATUS "sweep: 3 ratios, sweep.csv with 3 rows, a 6-bar sweep chart; resume finished only the killed ratio")

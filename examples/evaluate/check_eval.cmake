# Builds a labels CSV (one row per embedding) and runs taxon-eval on the run's embeddings.npy.
set(_csv ${RUN}/eval-labels.csv)
file(WRITE ${_csv} "taxa,species\n")
file(READ ${RUN}/labels.npy _hex HEX)
# .npy v1: 10-byte preamble (header length at bytes 8-9, little-endian), then int64 labels; each class id
# becomes a fake binomial "class<id> sp" so the genus rank is derived as the seeds do.
string(SUBSTRING "${_hex}" 16 2 _lo)
string(SUBSTRING "${_hex}" 18 2 _hi)
math(EXPR _data "(10 + 0x${_lo} + 256 * 0x${_hi}) * 2")
string(LENGTH "${_hex}" _len)
math(EXPR _n "(${_len} - ${_data}) / 16")
math(EXPR _last "${_n} - 1")
foreach(i RANGE ${_last})
  math(EXPR _off "${_data} + ${i} * 16")
  string(SUBSTRING "${_hex}" ${_off} 2 _byte)
  math(EXPR _id "0x${_byte}")
  math(EXPR _group "${_id} % 2")
  file(APPEND ${_csv} "g${_group},class${_id} sp\n")
endforeach()
execute_process(COMMAND ${EXE} --embeddings ${RUN}/embeddings.npy --labels ${_csv} --group-column taxa
                        --rank species=species "--rank" "genus=@genus(species)" --model after --out ${RUN}/eval-table.csv
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}")
if(rc)
  message(FATAL_ERROR "taxon-eval failed (${rc}): ${err}")
endif()

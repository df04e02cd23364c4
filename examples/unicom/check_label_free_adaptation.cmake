# The demo's two stages on the synthetic fixture (40 images: 2 fish and 2 bird species):
# 1. "pretraining" on the labels of the fish only (--labels-from species --train-filter taxa=Fish), evaluated on the
#    birds only (--eval-filter taxa!=Fish): the head has the 2 fish species, the table has no fish row;
# 2. pseudo-label adaptation from that checkpoint (--weights), run twice: on the fixture's CSV and on a copy whose
#    species and taxa are all relabelled (each species becomes another, fish become birds). The adaptation never
#    reads a training label, so both runs must write the same bytes of model.safetensors, embeddings.npy and
#    round-0/labels.npy (the report's purity figures, which compare clusters with the labels, may differ).
set(common --dataset csv --images ${FX} --path-column file --rank species=scientificName --rank taxa=taxa
           --group-rank taxa --image-size 32 --batch-size 8 --workers 1 --augment false --eval-fraction 0.5
           --zero-shot false --epochs 1)
function(run_unicom dir)
  file(REMOVE_RECURSE ${dir})
  execute_process(COMMAND ${CMAKE_COMMAND} -E env TAXON_NUM_THREADS=2 ${EXE} ${ARGN} --run-dir ${dir}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc)
    message(FATAL_ERROR "taxon-unicom ${ARGN} failed (${rc}):\n${out}\n${err}")
  endif()
  set(log "${out}${err}" PARENT_SCOPE)
endfunction()

run_unicom(${WORK}/pretrain ${common} --csv ${FX}/meta.csv --weights ${FX}/clip.safetensors --labels-from species
           --train-filter taxa=Fish --eval-filter taxa!=Fish)
if(NOT log MATCHES "train: [0-9]+ images \\(taxa=Fish\\), eval: [0-9]+ images \\(taxa!=Fish\\)")
  message(FATAL_ERROR "the pretraining run does not report its filtered sets:\n${log}")
endif()
file(STRINGS ${WORK}/pretrain/centroids.npy header LIMIT_COUNT 1 REGEX "'shape'")
if(NOT header MATCHES "'shape': \\(2, ")
  message(FATAL_ERROR "the pretraining head should have the 2 fish species as classes: ${header}")
endif()
file(READ ${WORK}/pretrain/eval_table.csv table)
if(NOT table MATCHES ",Bird," OR table MATCHES ",Fish,")
  message(FATAL_ERROR "the evaluation should hold birds only:\n${table}")
endif()

file(READ ${FX}/meta.csv meta)
set(relabelled "${meta}")
foreach(pair "Danio rerio;@1@" "Salmo trutta;Danio rerio" "Corvus corax;Salmo trutta" "Corvus corone;Corvus corax"
             "@1@;Corvus corone" ",Fish,;,@2@," ",Bird,;,Fish," ",@2@,;,Bird,")
  list(GET pair 0 from)
  list(GET pair 1 to)
  string(REPLACE "${from}" "${to}" relabelled "${relabelled}")
endforeach()
if(relabelled STREQUAL meta)
  message(FATAL_ERROR "relabelling changed nothing")
endif()
file(WRITE ${WORK}/relabelled.csv "${relabelled}")
set(adapt ${common} --weights ${WORK}/pretrain/model.safetensors --clusters 4 --kmeans-iters 5)
run_unicom(${WORK}/adapt ${adapt} --csv ${FX}/meta.csv)
run_unicom(${WORK}/adapt-relabelled ${adapt} --csv ${WORK}/relabelled.csv)
foreach(f model.safetensors embeddings.npy round-0/labels.npy)
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${WORK}/adapt/${f} ${WORK}/adapt-relabelled/${f}
                  RESULT_VARIABLE differ)
  if(differ)
    message(FATAL_ERROR "${f} depends on the training labels: the pseudo-label adaptation read them")
  endif()
endforeach()
message("adaptation outputs are identical with relabelled training data")

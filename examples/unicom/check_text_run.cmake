# taxon-unicom --cluster-on mean on the synthetic CLIP fixture, clustered as the seeds did (--kmeans-metric l2: L2
# k-means on the un-normalised mean) and with UNICOM's Recall@1: the run must finish, record the combination in
# config.json, cluster (labels.npy), name the Recall@K definition and the label cleaning in retrieval.json, and
# write the zero-shot table before and after plus the fine-tuned CLIP.
file(REMOVE_RECURSE ${RUN})
execute_process(COMMAND ${CMAKE_COMMAND} -E env TAXON_NUM_THREADS=2 ${EXE}
                        --dataset csv --csv ${FX}/meta.csv --images ${FX} --path-column file
                        --rank species=scientificName "--rank" "genus=@genus(scientificName)" --rank taxa=taxa
                        --group-rank taxa --weights ${FX}/clip.safetensors --caption-column caption
                        --cluster-on mean --kmeans-metric l2 --recall-definition unicom --image-size 32 --clusters 4 --kmeans-iters 5 --epochs 1 --batch-size 8
                        --workers 1 --augment false --eval-fraction 0.5 --run-dir ${RUN}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}\n${err}")
if(rc)
  message(FATAL_ERROR "taxon-unicom failed (${rc})")
endif()
file(READ ${RUN}/config.json config)
foreach(field "\"cluster_on\": \"mean\"" "\"caption_column\": \"caption\"" "\"kmeans_metric\": \"l2\""
              "\"recall_definition\": \"unicom\"")
  string(FIND "${config}" "${field}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "config.json lacks ${field}")
  endif()
endforeach()
if(NOT "${err}" MATCHES "clustering on mean of image and caption features")
  message(FATAL_ERROR "the run did not cluster joint features")
endif()
if(NOT "${err}" MATCHES "k-means: L2 on the features as they are" OR NOT "${err}" MATCHES "kmeans\\[faiss\\]: N=[0-9]+ D=[0-9]+ K=4 [^\n]* seed=1234 L2")
  message(FATAL_ERROR "the run did not run faiss's L2 k-means with seed 1234")
endif()
if(NOT "${err}" MATCHES "Recall@1 [0-9.]+% \\(unicom definition")
  message(FATAL_ERROR "the log does not name the Recall@K definition")
endif()
file(READ ${RUN}/retrieval.json retrieval)
string(JSON _def GET "${retrieval}" after recall_definition)
string(JSON _applied GET "${retrieval}" after label_cleaning applied)
if(NOT _def STREQUAL "unicom" OR NOT _applied STREQUAL "ON")
  message(FATAL_ERROR "retrieval.json: recall_definition ${_def}, label_cleaning applied ${_applied}")
endif()
foreach(f round-0/labels.npy zero_shot.csv clip.safetensors)
  if(NOT EXISTS ${RUN}/${f})
    message(FATAL_ERROR "${f} not written")
  endif()
endforeach()
file(READ ${RUN}/zero_shot.csv zs)
if(NOT zs MATCHES "before,clip,All,species" OR NOT zs MATCHES "after,taxonomic,Bird,genus")
  message(FATAL_ERROR "zero_shot.csv lacks before/after rows:\n${zs}")
endif()

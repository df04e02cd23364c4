# Runs taxon-eval --zero-shot on the synthetic fixture; every prompt set must report every rank (and the taxa
# column for All) with 40 queries, and the table must be written.
file(REMOVE ${FX}/zero_shot.csv)
execute_process(COMMAND ${EXE} --zero-shot --weights ${FX}/clip.safetensors --labels ${FX}/meta.csv --images ${FX}
                        --path-column file --rank species=scientificName "--rank" "genus=@genus(scientificName)"
                        --rank family=family --group-column taxa --model synthetic --zero-shot-out ${FX}/zero_shot.csv
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}")
if(rc)
  message(FATAL_ERROR "taxon-eval --zero-shot failed (${rc}): ${err}")
endif()
foreach(row "clip,All,species,[0-9.]+%,[0-9.]+%,40,4" "taxonomic,All,genus,[0-9.]+%,[0-9.]+%,40,3"
            "name,All,family,[0-9.]+%,[0-9.]+%,40,3" "clip,Fish,species,[0-9.]+%,[0-9.]+%,20,2"
            "taxonomic,Bird,species,[0-9.]+%,100.00%,20,2" "clip,All,taxa,[0-9.]+%,100.00%,40,2")
  if(NOT out MATCHES "synthetic,${row}")
    message(FATAL_ERROR "no zero-shot row matching 'synthetic,${row}'")
  endif()
endforeach()
if(NOT out MATCHES "model,taxa,column,accuracy_individual")
  message(FATAL_ERROR "the seeds' table is missing")
endif()
if(NOT EXISTS ${FX}/zero_shot.csv OR NOT EXISTS ${FX}/zero_shot.md)
  message(FATAL_ERROR "zero_shot.csv / .md not written")
endif()

# Messy labels, group column not called taxa: the zero-shot table cleans them as the seeds' table does (a blank
# species is no query, " Fish " is Fish) and names the All row's group column `taxa` like that table.
file(READ ${FX}/meta.csv meta)
string(REPLACE "file,scientificName,family,taxa,caption" "file,scientificName,family,group,caption" meta "${meta}")
file(WRITE ${FX}/messy.csv "${meta}img/0.png,,Cyprinidae,Fish,blank species\nimg/1.png,Salmo trutta,Salmonidae, Fish ,padded group\n")
execute_process(COMMAND ${EXE} --zero-shot --weights ${FX}/clip.safetensors --labels ${FX}/messy.csv --images ${FX}
                        --path-column file --rank species=scientificName --rank family=family --group-column group
                        --model synthetic
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}")
if(rc)
  message(FATAL_ERROR "taxon-eval --zero-shot on messy.csv failed (${rc}): ${err}")
endif()
foreach(row "clip,All,species,[0-9.]+%,[0-9.]+%,41,4" "name,All,family,[0-9.]+%,[0-9.]+%,41,3"
            "clip,Fish,species,[0-9.]+%,[0-9.]+%,21,2" "clip,All,taxa,[0-9.]+%,[0-9.]+%,41,2")
  if(NOT out MATCHES "synthetic,${row}")
    message(FATAL_ERROR "messy.csv: no zero-shot row matching 'synthetic,${row}'")
  endif()
endforeach()
if(NOT out MATCHES "\nsynthetic,All,taxa," OR out MATCHES "synthetic,[a-z]+, Fish" OR out MATCHES "All,group,")
  message(FATAL_ERROR "messy.csv: the tables differ in cleaning or in naming the All row's group column")
endif()

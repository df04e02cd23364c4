#pragma once
// Evaluation: exact kNN search, retrieval metrics (PML definitions, Recall@K, kNN vote), the seeds' taxonomy table.
#include "taxon/eval/knn.hpp"
#include "taxon/eval/retrieval.hpp"
#include "taxon/eval/taxonomy.hpp"

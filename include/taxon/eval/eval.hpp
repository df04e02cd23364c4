#pragma once
// Evaluation: exact kNN search, retrieval metrics (PML definitions, Recall@K, kNN vote), the seeds' taxonomy table,
// clustering agreement (NMI, AMI, purity).
#include "taxon/eval/cluster_agreement.hpp"
#include "taxon/eval/knn.hpp"
#include "taxon/eval/retrieval.hpp"
#include "taxon/eval/taxonomy.hpp"

#pragma once
// Clustering into pseudo-classes: k-means (faiss / LibTorch), feature combination, saving labels and centroids,
// purity of pseudo-classes against known ranks.
#include "taxon/cluster/features.hpp"
#include "taxon/cluster/kmeans.hpp"
#include "taxon/cluster/pseudo_labels.hpp"
#include "taxon/cluster/quality.hpp"

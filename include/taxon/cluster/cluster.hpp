#pragma once
// Clustering into pseudo-classes: k-means (faiss / LibTorch), feature combination, saving labels and centroids.
#include "taxon/cluster/features.hpp"
#include "taxon/cluster/kmeans.hpp"
#include "taxon/cluster/pseudo_labels.hpp"

#!/usr/bin/python3
"""Goldens for taxon's faiss k-means backend: Python faiss.Kmeans on a small committed feature set.

Run with Debian's interpreter and packages (dev time only; the tests read the .npy files this writes):
    apt-get install python3-faiss python3-numpy     # faiss 1.7.3, the same version as libfaiss-dev
    /usr/bin/python3 tests/data/kmeans/make_golden.py

features.npy: 600 x 16 float32, six Gaussian blobs with overlap (so the seed and the init matter).
For each case: centroids_<case>.npy (faiss.Kmeans(...).centroids) and labels_<case>.npy (index.search of every
point, as faiss.Kmeans.assign), written next to this script; cases.json lists the parameters.
"""
import json
import os

import faiss
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
rng = np.random.RandomState(2024)
centres = rng.randn(6, 16) * 3.0
x = (centres[rng.randint(0, 6, size=600)] + rng.randn(600, 16)).astype(np.float32)
np.save(os.path.join(here, "features.npy"), x)
unit = x / np.linalg.norm(x, axis=1, keepdims=True)

# name: (kwargs for faiss.Kmeans, normalise the features first)
cases = {
    # what the seeds ran: faiss.Kmeans(d, k, niter=20), faiss's default seed 1234, L2
    "l2_seeds": (dict(k=10, niter=20), False),
    "l2_seed7_subsample": (dict(k=8, niter=12, seed=7, max_points_per_centroid=40), False),
    "spherical_seed3": (dict(k=12, niter=15, seed=3, spherical=True), True),
    "l2_nredo3": (dict(k=9, niter=8, seed=11, nredo=3), False),
}
record = {}
for name, (kw, normalise) in cases.items():
    data = unit if normalise else x
    kw = dict(kw)
    k = kw.pop("k")
    km = faiss.Kmeans(data.shape[1], k, **kw)
    km.train(data)
    _, labels = km.assign(data)
    np.save(os.path.join(here, f"centroids_{name}.npy"), km.centroids.astype(np.float32))
    np.save(os.path.join(here, f"labels_{name}.npy"), labels.astype(np.int64))
    record[name] = dict(k=k, normalise=normalise, faiss_version=faiss.__version__, **kw)
with open(os.path.join(here, "cases.json"), "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
    f.write("\n")
print(json.dumps(record, indent=2))

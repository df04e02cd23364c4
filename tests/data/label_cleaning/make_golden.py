#!/usr/bin/python3
"""Golden for the seeds' label cleaning: their vlm_species_eval table on a small fixture with padded taxa names
and blank species, computed by a faithful re-implementation of their evaluation.

Run with Debian's interpreter and packages (dev time only; the tests read the files this writes):
    apt-get install python3-pandas python3-numpy
    /usr/bin/python3 tests/data/label_cleaning/make_golden.py

Writes, next to this script:
    fixture.csv         image_name, scientificName, taxa: taxa padded with spaces, a tab and a no-break space;
                        species blank (empty cell, spaces only) in some rows, one with a leading no-break space
    embeddings.npy      [N, 12] float32, row i embeds CSV row i (before any cleaning)
    expected_table.csv  the seeds' table (model, taxa, column, accuracy_individual, accuracy_avg,
                        distance_individual, distance_avg), as their DataFrame's to_csv(index=False)

What is re-implemented, from BioCosmos-AI/BioCosmos jupyter-workpad/vlm4_bio/eval_utils.py (vlm_species_eval,
apply_best_match_vectorized, find_best_match_vectorized, extract_genus) and the seeds' week-12 copy of
vlm_species_eval (their column names scientificName / taxa):
  * taxa = taxa.strip(); rows with scientificName.strip() == '' dropped; genus = scientificName.split()[0];
    the species label is scientificName as it is (not stripped);
  * groups 'Fish', 'Bird', 'Butterfly', then 'All' (pooled), each split into test (queries) / train (gallery);
  * accuracy_individual: label of the top-1 cosine neighbour (numpy argmax: first gallery row wins ties);
    accuracy_avg: class with the highest mean cosine over its gallery rows (pandas groupby mean + idxmax: the
    smallest label wins ties); distance_individual: their bug, the cosine neighbour again; distance_avg: class with
    the lowest mean Euclidean distance; All also gets a 'taxa' row; values formatted "xx.xx%".
Two differences from their code, both needed to get one definite table:
  * the split: sklearn's train_test_split without random_state is different on every run, so this script uses
    taxon's seeded split instead (taxon::eval::taxonomy_split: mt19937_64 seeded with derive_seed(seed,
    {fnv1a(group)}), Fisher-Yates, first ceil(0.2 n) rows are the test set), re-implemented below;
  * the CSV is read with keep_default_na=False, so an empty cell is '' (dropped as blank) rather than NaN (on
    which their extract_genus raises).
"""
import math
import os

import numpy as np
import pandas as pd

here = os.path.dirname(os.path.abspath(__file__))
M64 = (1 << 64) - 1
SEED = 7
MODEL = "trained_vlm_unicom"


# ---- taxon's seeded split (include/taxon/core/seed.hpp, include/taxon/eval/taxonomy.hpp) ----
class MT19937_64:
    def __init__(self, seed):
        self.mt = [0] * 312
        self.mt[0] = seed & M64
        for i in range(1, 312):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & M64
        self.index = 312

    def __call__(self):
        if self.index >= 312:
            for i in range(312):
                x = (self.mt[i] & 0xFFFFFFFF80000000) | (self.mt[(i + 1) % 312] & 0x7FFFFFFF)
                xa = x >> 1
                if x & 1:
                    xa ^= 0xB5026F5AA96619E9
                self.mt[i] = self.mt[(i + 156) % 312] ^ xa
            self.index = 0
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & M64


def mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def derive_seed(seed, parts):
    h = mix64(seed)
    for p in parts:
        h = mix64(h ^ mix64((p + 0x632BE59BD9B4E019) & M64))
    return h


def fnv1a(s):
    h = 1469598103934665603
    for c in s.encode("utf-8"):
        h = ((h ^ c) * 1099511628211) & M64
    return h


def uniform_below(eng, n):
    limit = M64 - M64 % n
    while True:
        x = eng()
        if x < limit:
            return x % n


def taxonomy_split(rows, test_size, seed, group):
    eng = MT19937_64(derive_seed(seed, [fnv1a(group)]))
    n = len(rows)
    n_test = math.ceil(test_size * n)
    perm = list(rows)
    for i in range(n, 1, -1):
        j = uniform_below(eng, i)
        perm[i - 1], perm[j] = perm[j], perm[i - 1]
    return perm[n_test:], perm[:n_test]  # train (gallery), test (queries)


_check = MT19937_64(5489)  # std::mt19937_64's default seed: its 1st output, and the 10000th ([rand.predef])
assert _check() == 14514284786278117030
assert [_check() for _ in range(9999)][-1] == 9981545732273789042


# ---- the fixture ----
def make_fixture():
    rng = np.random.RandomState(11)
    taxa_spellings = {"Fish": ["Fish", " Fish", "Fish  ", "\tFish"],
                      "Bird": ["Bird", "Bird\u00a0", "  Bird "],
                      "Butterfly": ["Butterfly", "Butterfly ", " Butterfly"]}
    species = {"Fish": ["Danio rerio", "Danio albolineatus", "Salmo trutta", "Salmo salar"],
               "Bird": ["Turdus merula", "Turdus philomelos", "Parus major"],
               "Butterfly": ["Papilio machaon", "Papilio demoleus", "Vanessa atalanta rubria"]}
    centres = {s: rng.randn(12) * 2.0 for group in species.values() for s in group}
    genus_shift = {}
    rows, emb = [], []
    i = 0
    for round_ in range(8):
        for group in ["Fish", "Bird", "Butterfly"]:
            for s in species[group]:
                g = s.split()[0]
                genus_shift.setdefault(g, rng.randn(12))
                name = s
                if round_ == 2 and s == "Danio rerio":
                    name = "\u00a0Danio rerio"  # their species label keeps the padding; the genus does not
                if round_ in (3, 6) and s in ("Salmo salar", "Parus major"):
                    name = "" if s == "Salmo salar" else "   "  # blank: dropped before the split
                spelling = taxa_spellings[group][(i + round_) % len(taxa_spellings[group])]
                rows.append({"image_name": f"img_{i:03d}.jpg", "scientificName": name, "taxa": spelling})
                emb.append(centres[s] + genus_shift[g] + rng.randn(12) * 2.4)
                i += 1
    return pd.DataFrame(rows), np.asarray(emb, dtype=np.float32)


# ---- the seeds' evaluation, as their code computes it ----
def find_best_match(test_emb, train_emb, train_labels):
    qn = test_emb / np.linalg.norm(test_emb, axis=1, keepdims=True)  # sklearn cosine_similarity
    gn = train_emb / np.linalg.norm(train_emb, axis=1, keepdims=True)
    sim = qn @ gn.T
    q2 = (test_emb * test_emb).sum(1)[:, None]  # sklearn euclidean_distances
    g2 = (train_emb * train_emb).sum(1)[None, :]
    dist = np.sqrt(np.maximum(q2 - 2 * test_emb @ train_emb.T + g2, 0))
    best_ind = train_labels[sim.argmax(axis=1)]
    dist_ind = train_labels[sim.argmax(axis=1)]  # their bug: the cosine neighbour, not dist.argmin
    nq, nt = sim.shape
    tiled = np.tile(train_labels, (nq, 1)).flatten()
    sdf = pd.DataFrame({"test_idx": np.repeat(range(nq), nt), "label": tiled, "score": sim.flatten()})
    avg = sdf.groupby(["test_idx", "label"], as_index=False).mean()
    best_avg = avg.loc[avg.groupby("test_idx")["score"].idxmax(), "label"].values
    ddf = pd.DataFrame({"test_idx": np.repeat(range(nq), nt), "label": tiled, "score": dist.flatten()})
    davg = ddf.groupby(["test_idx", "label"], as_index=False).mean()
    best_davg = davg.loc[davg.groupby("test_idx")["score"].idxmin(), "label"].values
    return best_ind, best_avg, dist_ind, best_davg


def score(test_df, train_df, column):
    test_emb = np.array(test_df["image_embeddings"].tolist())
    train_emb = np.array(train_df["image_embeddings"].tolist())
    preds = find_best_match(test_emb, train_emb, train_df[column].values)
    truth = test_df[column].values
    return [f"{np.mean(p == truth) * 100:.2f}%" for p in preds]


def vlm_species_eval(full_species_df, embeddings):
    full_species_df["taxa"] = full_species_df["taxa"].apply(lambda x: x.strip())
    full_species_df["image_embeddings"] = list(embeddings)
    full_species_df = full_species_df[full_species_df["scientificName"].str.strip() != ""].copy()
    full_species_df["genus"] = full_species_df["scientificName"].apply(lambda s: s.split()[0])
    full_species_df = full_species_df.reset_index(drop=True)
    rows = []
    for taxa in ["Fish", "Bird", "Butterfly", "All"]:
        df = full_species_df if taxa == "All" else full_species_df[full_species_df["taxa"] == taxa]
        train_rows, test_rows = taxonomy_split(list(df.index), 0.2, SEED, taxa)
        train_df, test_df = full_species_df.loc[train_rows], full_species_df.loc[test_rows]
        for label, column in [("species", "scientificName"), ("genus", "genus")] + ([("taxa", "taxa")] if taxa == "All" else []):
            a_ind, a_avg, d_ind, d_avg = score(test_df, train_df, column)
            rows.append({"model": MODEL, "taxa": taxa, "column": label, "accuracy_individual": a_ind,
                         "accuracy_avg": a_avg, "distance_individual": d_ind, "distance_avg": d_avg})
    return pd.DataFrame(rows, columns=["model", "taxa", "column", "accuracy_individual", "accuracy_avg",
                                       "distance_individual", "distance_avg"])


if __name__ == "__main__":
    df, emb = make_fixture()
    df.to_csv(os.path.join(here, "fixture.csv"), index=False)
    np.save(os.path.join(here, "embeddings.npy"), emb)
    table = vlm_species_eval(pd.read_csv(os.path.join(here, "fixture.csv"), keep_default_na=False), emb)
    table.to_csv(os.path.join(here, "expected_table.csv"), index=False)
    print(table.to_string())

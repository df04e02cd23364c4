#!/usr/bin/python3
"""Prints sklearn's NMI, AMI (average_method='arithmetic', its default), MI, EMI and entropies for the labelings
that tests/unit/test_report.cpp rebuilds from the same formulas. Development aid only: the numbers are pasted into
the test, which never runs Python. Run with Debian's python3 and python3-sklearn (1.2.1 on bookworm)."""
import numpy as np
import sklearn
from sklearn.metrics import adjusted_mutual_info_score, mutual_info_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix, entropy, expected_mutual_information


def cases():
    yield "hand", [0, 0, 0, 1, 1, 1, 2, 2, 2, 2], [1, 1, 0, 0, 2, 2, 2, 3, 3, 3]
    n = 300
    yield "poly300", [(i * 37 + i * i * 11) % 7 for i in range(n)], [(i * i * 13 + i * 5 + 3) % 23 for i in range(n)]
    n = 60
    yield "pairs60", [i % 3 for i in range(n)], [(i * 7) % 30 for i in range(n)]
    n = 2000
    truth = [(i * i * 7 + i * 3) % 50 for i in range(n)]
    yield "noisy2000", truth, [(t * 3 + (i * i * 31 + i * 17) % 5) % 120 for i, t in enumerate(truth)]
    yield "odd_values", [-7, -7, 1000000, 1000000, 5, 5, 5, -7], [42, 42, 42, 9, 9, 9, 3, 3]
    n = 40
    yield "independent40", [i % 2 for i in range(n)], [(i // 2) % 10 for i in range(n)]
    yield "truth_constant", [4] * 12, [i % 3 for i in range(12)]
    yield "pred_singletons", [i % 4 for i in range(16)], list(range(16))
    n = 20000  # a k-means-sized case: hundreds of classes and clusters, E[MI] over many size pairs
    truth = [(i * i * 7 + i * 3) % 300 for i in range(n)]
    yield "large20000", truth, [(t * 3 + (i * 31) % 7) % 1000 for i, t in enumerate(truth)]


print(f"# sklearn {sklearn.__version__}, numpy {np.__version__}")
for name, t, p in cases():
    t, p = np.asarray(t), np.asarray(p)
    c = contingency_matrix(t, p, sparse=True)
    emi = expected_mutual_information(c, len(t))
    print(f'{{"{name}", {normalized_mutual_info_score(t, p)!r}, {adjusted_mutual_info_score(t, p)!r}, '
          f'{mutual_info_score(t, p)!r}, {emi!r}, {entropy(t)!r}, {entropy(p)!r}}},')

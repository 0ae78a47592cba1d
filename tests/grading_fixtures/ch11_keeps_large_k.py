"""Every k is kept, also those above the number of samples: "the best of 32" from 8 samples is just the
best of 8, reported as if more had been drawn."""
import numpy as np

EXPECT_FAIL = {"reward_vs_k_skips_large_k"}


def reward_vs_k(scores, ks):
    values = np.asarray(scores, dtype=np.float64)
    return {"k": list(ks), "max": [float(values[:, :k].max(axis=1).mean()) for k in ks],
            "median": [float(np.median(values[:, :k], axis=1).mean()) for k in ks]}

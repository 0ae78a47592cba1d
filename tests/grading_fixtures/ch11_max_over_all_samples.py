"""The max over all K samples whatever k is: a flat "curve" that shows no gain from sampling more."""
import numpy as np

EXPECT_FAIL = {"reward_vs_k_max_curve"}


def reward_vs_k(scores, ks):
    values = np.asarray(scores, dtype=np.float64)
    kept = [k for k in ks if k <= values.shape[1]]
    return {"k": kept, "max": [float(values.max(axis=1).mean()) for _ in kept],
            "median": [float(np.median(values[:, :k], axis=1).mean()) for k in kept]}

"""The last of the tied best samples instead of the first: same score, but a different answer kept
than minillama (and the run is no longer reproducible against it)."""
EXPECT_FAIL = {"best_of_k_first_on_ties"}


def best_of_k(scores):
    k = scores.shape[-1]
    return k - 1 - scores.flip(-1).argmax(dim=-1)

"""Plain accuracy instead of balanced accuracy: with few good samples it keeps almost nothing."""
EXPECT_FAIL = {"choose_threshold_matches_reference", "choose_threshold_is_balanced"}


def choose_threshold(rewards, truth, good=0.7):
    import numpy as np
    rewards, is_good = np.asarray(rewards, dtype=float), np.asarray(truth, dtype=float) >= good
    if is_good.all() or not is_good.any():
        return float(rewards.min())
    levels = np.unique(rewards)
    accuracy = [((rewards >= level) == is_good).mean() for level in levels]
    return float(levels[int(np.argmax(accuracy))])

"""Keeps only rewards strictly above the level: the level is then one sample too low."""
EXPECT_FAIL = {"choose_threshold_matches_reference", "choose_threshold_keeps_the_level"}


def choose_threshold(rewards, truth, good=0.7):
    import numpy as np
    rewards, is_good = np.asarray(rewards, dtype=float), np.asarray(truth, dtype=float) >= good
    if is_good.all() or not is_good.any():
        return float(rewards.min())
    levels = np.unique(rewards)
    balanced = [((rewards > level)[is_good].mean() + (rewards <= level)[~is_good].mean()) / 2 for level in levels]
    return float(levels[int(np.argmax(balanced))])

"""Pairs counted over all chunks joined together: the last id of one word and the first id of the
next are taken for neighbours, so merges would cross word boundaries."""

EXPECT_FAIL = {"count_pairs_matches_reference", "count_pairs_stays_inside_chunks"}


def count_pairs(chunks):
    ids = [i for chunk in chunks for i in chunk]
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts

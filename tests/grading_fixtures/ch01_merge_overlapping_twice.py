"""Every position where the pair occurs in the *original* list is merged, so overlapping occurrences
of a pair like (7, 7) both fire: [7, 7, 7] becomes [new, new] instead of [new, 7]."""

EXPECT_FAIL = {"merge_pair_overlapping_occurrences"}


def merge_pair(ids, pair, new_id):
    out = list(ids)
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            out[i], out[i + 1] = new_id, None
    return [x for x in out if x is not None]

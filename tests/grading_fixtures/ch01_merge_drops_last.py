"""The scan stops one short (while i < len(ids) - 1), so a last id that does not end a match is lost."""

EXPECT_FAIL = {"merge_pair_matches_reference", "merge_pair_overlapping_occurrences", "merge_pair_ends_and_short_lists"}


def merge_pair(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out

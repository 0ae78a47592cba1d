"""No stop when every word is a single token: max() of the empty counts raises ValueError."""

EXPECT_FAIL = {"bpe_train_stops_when_nothing_is_left"}


def bpe_train(text, n_merges):
    chunks = [list(word.encode("utf-8")) for word in split_words(text)]  # noqa: F821 - the notebook's
    merges = []
    for new_id in range(256, 256 + n_merges):
        counts = count_pairs(chunks)  # noqa: F821
        pair = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        chunks = [merge_pair(chunk, pair, new_id) for chunk in chunks]  # noqa: F821
        merges.append(pair)
    return merges

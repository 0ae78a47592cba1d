"""Chapter 01 checks: ``count_pairs``, ``merge_pair``, ``bpe_train`` and ``encode_chat``.

Byte-level BPE as the notebook defines it: a text is cut into words by ``split_words`` (a word is
a run of non-space characters with the one space before it, or a run of whitespace), each word
starts as its UTF-8 bytes (ids 0..255), and merge ``i`` joins the most frequent adjacent pair
into the new id ``256 + i`` (ties: the smallest pair). minillama's own tokenizer is SentencePiece,
which stores no merge list, so the BPE references are written here. ``encode_chat`` is checked
against :meth:`minillama.tokenizer.Tokenizer.apply_chat_template` on a tokenizer trained here.

``bpe_train`` is checked with the reference ``count_pairs``, ``merge_pair`` and ``split_words``
swapped in, so that a mistake in one of those costs points only in its own checks.
"""

from __future__ import annotations

import functools
import random
import re
from collections import Counter
from typing import Any, Sequence

from ...tokenizer import Tokenizer
from ..check import Checks, Learner, expect_equal, expect_pair, fail

CHECKS = Checks()

FIRST_MERGE_ID = 256
WORD = re.compile(r" ?\S+|\s+")

# A short text to train on: a few facts and numbers, repeated so that BPE has pairs to merge.
TEXT = (
    "Mia has a red ball. Tom has a blue kite. Mia gave the red ball to Tom.\n"
    "The cat sat on the mat. The dog sat on the log. 12 cats and 34 dogs sat there.\n"
    "Where is the kite? The kite is in the tree, and the ball is under the table.\n"
) * 6


# ------------------------------------------------------------------ references
def reference_split_words(text: str) -> list[str]:
    """The words BPE merges within: ``" ?\\S+"`` (a word with the space before it) or a whitespace run."""
    return WORD.findall(text)


def reference_count_pairs(chunks: Sequence[Sequence[int]]) -> Counter:
    """How often each adjacent pair occurs inside the chunks (never across two of them)."""
    counts: Counter = Counter()
    for chunk in chunks:
        counts.update(zip(chunk, chunk[1:]))
    return counts


def reference_merge_pair(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """``ids`` with every occurrence of ``pair`` replaced by ``new_id``, left to right, never overlapping."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def reference_bpe_train(text: str, n_merges: int) -> list[tuple[int, int]]:
    chunks = [list(word.encode("utf-8")) for word in reference_split_words(text)]
    merges: list[tuple[int, int]] = []
    for new_id in range(FIRST_MERGE_ID, FIRST_MERGE_ID + n_merges):
        counts = reference_count_pairs(chunks)
        if not counts:  # every word is a single token: nothing left to merge
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        chunks = [reference_merge_pair(chunk, pair, new_id) for chunk in chunks]
        merges.append(pair)
    return merges


@functools.lru_cache(maxsize=1)
def small_tokenizer() -> Tokenizer:
    return Tokenizer.train(TEXT.splitlines(), vocab_size=320)


def _random_chunks(rng: random.Random, n: int, alphabet: int, max_len: int) -> list[list[int]]:
    return [[rng.randrange(alphabet) for _ in range(rng.randint(0, max_len))] for _ in range(n)]


def _expect_counts(got: Any, expected: dict, what: str) -> None:
    if not isinstance(got, dict):
        fail(f"{what} returned {type(got).__name__}, expected a dict {{(a, b): count}}")
    got = {pair: count for pair, count in got.items() if count != 0}  # a Counter may keep zeros
    if got != dict(expected):
        extra = sorted(set(got) - set(expected), key=repr)[:3]
        missing = sorted(set(expected) - set(got))[:3]
        wrong = sorted((p for p in set(got) & set(expected) if got[p] != expected[p]), key=repr)[:3]
        details = [f"pairs that do not occur {extra}" if extra else "",
                   f"missing pairs {missing}" if missing else "",
                   ", ".join(f"{p}: {got[p]} instead of {expected[p]}" for p in wrong)]
        fail(f"{what} differs from the reference: " + "; ".join(d for d in details if d))


# ------------------------------------------------------------------ count_pairs
@CHECKS.add(points=2, hint="for each chunk, count zip(chunk, chunk[1:]): every adjacent pair, overlapping "
                           "ones included ((1, 1) occurs twice in [1, 1, 1])")
def count_pairs_matches_reference(learner: Learner) -> None:
    count_pairs = learner.function("count_pairs")
    rng = random.Random(0)
    for alphabet in (3, 6):
        chunks = _random_chunks(rng, 8, alphabet, 12)
        _expect_counts(count_pairs([list(c) for c in chunks]), reference_count_pairs(chunks),
                       f"count_pairs(8 random chunks of ids < {alphabet})")


@CHECKS.add(points=1, hint="a pair never spans two chunks: the last id of one word and the first of the next "
                           "are not adjacent; empty and one-id chunks add nothing")
def count_pairs_stays_inside_chunks(learner: Learner) -> None:
    count_pairs = learner.function("count_pairs")
    cases = [[[1, 2], [3, 4]], [[5], [5], [5, 5]], [[], [7], []], []]
    for chunks in cases:
        _expect_counts(count_pairs([list(c) for c in chunks]), reference_count_pairs(chunks),
                       f"count_pairs({chunks})")


# ------------------------------------------------------------------ merge_pair
@CHECKS.add(points=2, hint="walk left to right: where ids[i], ids[i + 1] is the pair, emit new_id and skip "
                           "both; otherwise emit ids[i] and move on by one")
def merge_pair_matches_reference(learner: Learner) -> None:
    merge_pair = learner.function("merge_pair")
    rng = random.Random(1)
    for _ in range(6):
        ids = [rng.randrange(4) for _ in range(30)]
        a = rng.randrange(4)
        pair = (a, (a + rng.randrange(1, 4)) % 4)  # two different ids: occurrences cannot overlap
        expect_equal(merge_pair(list(ids), pair, 99), reference_merge_pair(ids, pair, 99),
                     f"merge_pair({ids}, {pair}, 99)")


@CHECKS.add(points=1, hint="occurrences of a pair like (7, 7) can overlap: in [7, 7, 7] the first two merge "
                           "and the third stays, [new, 7]; a merged id is never merged again in the same pass")
def merge_pair_overlapping_occurrences(learner: Learner) -> None:
    merge_pair = learner.function("merge_pair")
    for ids in ([7, 7, 7], [7, 7, 7, 7], [1, 7, 7, 7, 2, 7, 7], [7, 7, 7, 7, 7]):
        expect_equal(merge_pair(list(ids), (7, 7), 300), reference_merge_pair(ids, (7, 7), 300),
                     f"merge_pair({ids}, (7, 7), 300)")


@CHECKS.add(points=1, hint="the last id is kept when it does not end a match; an empty or one-id list comes "
                           "back as it is; return a new list and leave ids unchanged")
def merge_pair_ends_and_short_lists(learner: Learner) -> None:
    merge_pair = learner.function("merge_pair")
    for ids in ([1, 2, 3], [3, 1, 2], [1, 2], [1, 2, 1], [1], [], [2, 1]):
        given = list(ids)
        expect_equal(merge_pair(given, (1, 2), 256), reference_merge_pair(ids, (1, 2), 256),
                     f"merge_pair({ids}, (1, 2), 256)")
        if given != ids:
            fail(f"merge_pair({ids}, (1, 2), 256) changed its input list to {given}")


# ------------------------------------------------------------------ bpe_train
def _train(learner: Learner, text: str, n_merges: int) -> Any:
    bpe_train = learner.function("bpe_train")
    with learner.using_references(count_pairs=reference_count_pairs, merge_pair=reference_merge_pair,
                                  split_words=reference_split_words):
        return bpe_train(text, n_merges)


def _expect_merges(got: Any, expected: list[tuple[int, int]], what: str) -> None:
    if not isinstance(got, list) or not all(isinstance(p, tuple) and len(p) == 2 for p in got):
        fail(f"{what} returned {type(got).__name__} {got!r:.80}, expected a list of (int, int) tuples")
    for i, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            fail(f"{what}: merge {i} (new id {FIRST_MERGE_ID + i}) is {g}, expected {e}; the merges "
                 f"before it agree")
    if len(got) != len(expected):
        fail(f"{what} returned {len(got)} merges, expected {len(expected)}")


@CHECKS.add(points=2, hint="each step: count the pairs of all words, take the most frequent, merge it in every "
                           "word with id 256 + step, and record the pair")
def bpe_train_matches_reference(learner: Learner) -> None:
    for n_merges in (1, 25):
        _expect_merges(_train(learner, TEXT, n_merges), reference_bpe_train(TEXT, n_merges),
                       f"bpe_train(TEXT, {n_merges})")


@CHECKS.add(points=1, hint="between pairs with the same count take the smallest pair: "
                           "min(counts, key=lambda p: (-counts[p], p)); not the first one seen")
def bpe_train_breaks_ties_by_smallest_pair(learner: Learner) -> None:
    for text in ("dc ab", "zy xw zy xw ba", "the cat, the hat"):  # none of them runs out of pairs in 2 merges
        _expect_merges(_train(learner, text, 2), reference_bpe_train(text, 2), f"bpe_train({text!r}, 2)")


@CHECKS.add(points=1, hint="stop early when no word has two tokens left to pair, and return [] for n_merges=0")
def bpe_train_stops_when_nothing_is_left(learner: Learner) -> None:
    for text, n_merges in (("ab ab", 10), ("hello", 0), ("aaaa", 9), ("a b c", 3)):
        _expect_merges(_train(learner, text, n_merges), reference_bpe_train(text, n_merges),
                       f"bpe_train({text!r}, {n_merges})")


# ------------------------------------------------------------------ encode_chat
def _chat(learner: Learner, messages: list[dict[str, str]], add_generation_prompt: bool = False,
          ) -> tuple[Any, Any, list[int], list[bool]]:
    encode_chat = learner.function("encode_chat")
    tok = small_tokenizer()
    got = encode_chat(tok, [dict(m) for m in messages], add_generation_prompt)
    ids, mask = expect_pair(got, "encode_chat", "(ids, mask)")
    ref_ids, ref_mask = tok.apply_chat_template(messages, add_generation_prompt)
    return ids, mask, ref_ids, ref_mask


ONE_TURN = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Who has the red ball?"},
            {"role": "assistant", "content": "Tom has it."}]
TWO_TURNS = [{"role": "user", "content": "Where is the kite?"},
             {"role": "assistant", "content": "In the tree."},
             {"role": "user", "content": ""},
             {"role": "assistant", "content": "12 cats sat there."},
             {"role": "user", "content": "And the dogs?"}]


def _expect_mask(mask: Any, ref_ids: list[int], ref_mask: list[bool], what: str) -> None:
    if not isinstance(mask, list) or len(mask) != len(ref_mask):
        length = len(mask) if hasattr(mask, "__len__") else "?"
        fail(f"{what}: mask is {type(mask).__name__} of length {length}, expected a list of {len(ref_mask)} bools")
    wrong = [i for i, (m, r) in enumerate(zip(mask, ref_mask)) if m != r]
    if wrong:
        tok = small_tokenizer()
        shown = ", ".join(f"{tok.id_to_piece(ref_ids[i])!r} at {i} (should be {ref_mask[i]})" for i in wrong[:4])
        fail(f"{what}: mask is wrong at {len(wrong)} tokens: {shown}")


@CHECKS.add(points=2, hint="<s>, then for each message its role marker, tok.encode(content) and <|end|>: "
                           "ids of the markers come from tok.bos_id, tok.role_id(role) and tok.end_id")
def encode_chat_ids(learner: Learner) -> None:
    ids, _, ref_ids, _ = _chat(learner, ONE_TURN)
    expect_equal(ids, ref_ids, "encode_chat(tok, [system, user, assistant]) ids")


@CHECKS.add(points=2, hint="the mask is True on an assistant answer's tokens and its <|end|> (the model must "
                           "learn to stop), False on <s>, every role marker and every other message")
def encode_chat_mask(learner: Learner) -> None:
    _, mask, ref_ids, ref_mask = _chat(learner, ONE_TURN)
    _expect_mask(mask, ref_ids, ref_mask, "encode_chat(tok, [system, user, assistant])")


@CHECKS.add(points=1, hint="repeat the turn pattern for every message (an empty content is just marker and "
                           "<|end|>); add_generation_prompt appends <|assistant|>, masked out")
def encode_chat_turns_and_generation_prompt(learner: Learner) -> None:
    for add in (False, True):
        ids, mask, ref_ids, ref_mask = _chat(learner, TWO_TURNS, add)
        what = f"encode_chat(tok, five messages, add_generation_prompt={add})"
        expect_equal(ids, ref_ids, f"{what} ids")
        _expect_mask(mask, ref_ids, ref_mask, what)


@CHECKS.add(points=1, hint="encode each content on its own with tok.encode and place the marker ids yourself; "
                           "encoding the rendered text turns the markers into plain-text tokens")
def encode_chat_marker_text_stays_text(learner: Learner) -> None:
    messages = [{"role": "user", "content": "Type <|assistant|> then <s>."},
                {"role": "assistant", "content": "<|end|> is text here."}]
    ids, _, ref_ids, _ = _chat(learner, messages)
    expect_equal(ids, ref_ids, "encode_chat(tok, messages that spell out marker names) ids")

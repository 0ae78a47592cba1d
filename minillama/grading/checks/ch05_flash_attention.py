"""Chapter 05 checks: ``online_softmax_update``, ``flash_forward_block`` and the Triton kernel
``flash_forward_kernel``.

Shapes: the running state ``m, l (..., t)`` and ``acc (..., t, d)``; a key block's
``scores_block (..., t, n)`` and ``v_block (..., n, d)``; ``q_block (..., m, d)`` and
``k, v (..., s, d)``. Scores are scaled by ``1 / sqrt(d)``; logsumexps are natural logarithms.

``flash_forward_block`` is checked with the reference ``online_softmax_update`` swapped in, so that
a mistake in the update costs points only in the update's checks; swapping in a counting reference
is also how its tile skipping is seen. The kernel is launched by the check itself (the grid and
arguments of the notebook's ``flash_forward``) through Triton's interpreter, on CPU tensors in
float32, where it computes exactly what PyTorch computes up to rounding.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import torch

from ..check import CheckFailed, Checks, Learner, expect_tensor, fail, one_line, seeded

CHECKS = Checks()

NEG_INF = float("-inf")
LOG2_E = math.log2(math.e)
KERNEL = "flash_forward_kernel"
_MISSING = object()


# --------------------------------------------------------------------------- references
def reference_online_softmax_update(m: torch.Tensor, l: torch.Tensor, acc: torch.Tensor, scores_block: torch.Tensor,
                                    v_block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one key block into the running ``(max, sum of exp, sum of exp * value)`` of each row."""
    m_new = torch.maximum(m, scores_block.amax(dim=-1))
    # Rows that have seen only -inf keep m = -inf; shifting them by 0 keeps exp() away from -inf - -inf.
    shift = m_new.masked_fill(m_new == NEG_INF, 0.0)
    alpha = torch.exp(m - shift)
    p = torch.exp(scores_block - shift[..., None])
    return m_new, alpha * l + p.sum(dim=-1), alpha[..., None] * acc + p @ v_block


def initial_state(q_like: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``m = -inf, l = 0, acc = 0`` for the rows of ``q_like (..., t, *)``."""
    rows = q_like.shape[:-1]
    return torch.full(rows, NEG_INF), torch.zeros(rows), torch.zeros(*rows, d)


def hidden_keys(t: int, s: int, q_offset: int, causal: bool) -> torch.Tensor:
    """``(t, s)`` bool, True where query row ``i`` (at position ``q_offset + i``) may not see key ``j``."""
    if not causal:
        return torch.zeros(t, s, dtype=torch.bool)
    return torch.arange(s)[None, :] > q_offset + torch.arange(t)[:, None]


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                        q_offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T / sqrt(d)) v`` and the natural logsumexp of its rows, ``(..., t, d)`` and ``(..., t)``."""
    scores = (q @ k.mT) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(hidden_keys(q.shape[-2], k.shape[-2], q_offset, causal), NEG_INF)
    return scores.softmax(dim=-1) @ v, scores.logsumexp(dim=-1)


def visited_blocks(rows: int, s: int, block_n: int, causal: bool, q_offset: int) -> int:
    """Key blocks a query block must visit: those holding at least one key its last row can see."""
    end = min(q_offset + rows, s) if causal else s
    return -(-end // block_n)


def _randn(*shape: int, gen: torch.Generator, std: float = 1.0) -> torch.Tensor:
    return std * torch.randn(*shape, generator=gen)


def _state(got: Any, what: str) -> tuple[Any, Any, Any]:
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        fail(f"{what} returned {type(got).__name__}, expected a triple (m, l, acc)")
    return got[0], got[1], got[2]


def _expect_state(got: Any, expected: tuple[torch.Tensor, ...], what: str) -> None:
    m, l, acc = _state(got, what)
    for name, value, reference in (("m", m, expected[0]), ("l", l, expected[1]), ("acc", acc, expected[2])):
        expect_tensor(value, reference, f"{name} from {what}")


def _fold(update: Callable[..., Any], scores: torch.Tensor, v: torch.Tensor, block: int,
          what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``update`` over the key blocks of ``scores (..., t, s)`` and ``v (..., s, d)``."""
    m, l, acc = initial_state(scores, v.shape[-1])
    for start in range(0, scores.shape[-1], block):
        m, l, acc = _state(update(m.clone(), l.clone(), acc.clone(), scores[..., start:start + block].clone(),
                                  v[..., start:start + block, :].clone()), what)
    return m, l, acc


# --------------------------------------------------------------------------- online_softmax_update
@CHECKS.add(points=1, hint="from m = -inf, l = 0, acc = 0 one block gives m = its row max, "
                           "l = sum(exp(scores - m)) and acc = exp(scores - m) @ v_block")
def online_softmax_first_block(learner: Learner) -> None:
    update = learner.function("online_softmax_update")
    gen = seeded(0)
    scores, v = _randn(2, 5, 4, gen=gen, std=3.0), _randn(2, 4, 8, gen=gen)
    state = initial_state(scores, 8)
    got = update(*(x.clone() for x in state), scores.clone(), v.clone())
    _expect_state(got, reference_online_softmax_update(*state, scores, v), "online_softmax_update on the first block")


@CHECKS.add(points=2, hint="when a block raises a row's max from m to m_new, the old l and acc were summed "
                           "relative to m: multiply both by exp(m - m_new) before adding the new block")
def online_softmax_rescales_the_state(learner: Learner) -> None:
    update = learner.function("online_softmax_update")
    gen = seeded(1)
    first, second = _randn(3, 6, 4, gen=gen), _randn(3, 6, 5, gen=gen) + 4.0  # the max rises in every row
    v1, v2 = _randn(3, 4, 8, gen=gen), _randn(3, 5, 8, gen=gen)
    state = reference_online_softmax_update(*initial_state(first, 8), first, v1)
    got = update(*(x.clone() for x in state), second.clone(), v2.clone())
    _expect_state(got, reference_online_softmax_update(*state, second, v2),
                  "online_softmax_update on a block with a higher max")


@CHECKS.add(points=2, hint="folding every key block and finishing with acc / l and m + log(l) must give "
                           "softmax(S) @ V and logsumexp(S), whatever the block size")
def online_softmax_folds_to_softmax(learner: Learner) -> None:
    update = learner.function("online_softmax_update")
    gen = seeded(2)
    scores, v = _randn(2, 3, 5, 11, gen=gen, std=2.0), _randn(2, 3, 11, 4, gen=gen)
    for block in (1, 3, 4, 11):
        m, l, acc = _fold(update, scores, v, block, "online_softmax_update")
        what = f"online_softmax_update folded over blocks of {block} keys"
        if not all(isinstance(x, torch.Tensor) for x in (m, l, acc)):
            fail(f"{what} did not return tensors (m, l, acc)")
        expect_tensor(acc / l[..., None], scores.softmax(dim=-1) @ v, f"acc / l after {what}")
        expect_tensor(m + torch.log(l), scores.logsumexp(dim=-1), f"m + log(l) after {what}")


@CHECKS.add(points=1, hint="a row whose scores so far are all -inf has m_new = -inf, and exp(-inf - (-inf)) "
                           "is NaN: subtract 0 instead of m_new for such rows, so that l and acc stay 0")
def online_softmax_masked_rows(learner: Learner) -> None:
    update = learner.function("online_softmax_update")
    gen = seeded(3)
    scores, v = _randn(4, 8, gen=gen), _randn(8, 4, gen=gen)
    # Row 0 sees only its last block, row 1 sees nothing, row 2 only its first block, row 3 one key.
    hidden = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [1] * 8, [0, 0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 1]])
    scores = scores.masked_fill(hidden.bool(), NEG_INF)
    m, l, acc = _fold(update, scores, v, 4, "online_softmax_update")
    expected = _fold(reference_online_softmax_update, scores, v, 4, "reference")
    for name, value, reference in (("m", m, expected[0]), ("l", l, expected[1]), ("acc", acc, expected[2])):
        if isinstance(value, torch.Tensor) and torch.isnan(value).any():
            fail(f"{name} is NaN after folding rows whose first blocks are all -inf")
        expect_tensor(value, reference, f"{name} after folding rows whose first blocks are all -inf")
    seen = torch.tensor([0, 2, 3])
    expect_tensor((acc / l[..., None])[seen], scores[seen].softmax(dim=-1) @ v,
                  "acc / l for the rows that see some keys")


# --------------------------------------------------------------------------- flash_forward_block
@contextlib.contextmanager
def _update_swapped_in(learner: Learner, update: Callable[..., Any]) -> Iterator[None]:
    """``online_softmax_update`` is ``update`` while ``flash_forward_block`` runs: in the learner's
    namespace and in the globals the function looks names up in, where they differ (a function
    imported from a module of the learner's, or copied from another namespace)."""
    caller = learner.namespace.get("flash_forward_block")
    scope = getattr(caller, "__globals__", None)
    other = scope if isinstance(scope, dict) and scope is not learner.namespace else None
    with learner.using_references(online_softmax_update=update):
        if other is None:
            yield
            return
        saved = other.get("online_softmax_update", _MISSING)
        other["online_softmax_update"] = update
        try:
            yield
        finally:
            if saved is _MISSING:
                other.pop("online_softmax_update", None)
            else:
                other["online_softmax_update"] = saved


def _block_call(learner: Learner, q_block: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_n: int, causal: bool,
                q_offset: int, update: Callable[..., Any] = reference_online_softmax_update) -> tuple[Any, Any]:
    flash_forward_block = learner.function("flash_forward_block")
    with _update_swapped_in(learner, update):
        got = flash_forward_block(q_block.clone(), k.clone(), v.clone(), block_n, causal, q_offset)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail(f"flash_forward_block returned {type(got).__name__}, expected a pair (o_block, lse)")
    return got[0], got[1]


def _qkv(*lead: int, t: int, s: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = seeded(seed)
    return _randn(*lead, t, d, gen=gen), _randn(*lead, s, d, gen=gen), _randn(*lead, s, d, gen=gen)


@CHECKS.add(points=1, hint="scores are q_block @ k_block^T / sqrt(d), and the output is acc / l once every "
                           "key block has been folded in")
def flash_block_matches_attention(learner: Learner) -> None:
    q, k, v = _qkv(2, 3, t=5, s=13, d=8, seed=10)
    for block_n in (4, 5, 13):
        o, _ = _block_call(learner, q, k, v, block_n, False, 0)
        expect_tensor(o, reference_attention(q, k, v, False, 0)[0], f"o_block (causal=False, block_n={block_n})")


@CHECKS.add(points=1, hint="the logsumexp of a row is log(sum(exp(scores))) = m + log(l), in natural log")
def flash_block_logsumexp(learner: Learner) -> None:
    q, k, v = _qkv(2, 2, t=6, s=10, d=8, seed=11)
    _, lse = _block_call(learner, q, k, v, 4, False, 0)
    expect_tensor(lse, reference_attention(q, k, v, False, 0)[1], "lse from flash_forward_block (causal=False)")


@CHECKS.add(points=1, hint="with causal=True a query at position p sees keys j <= p: mask the other scores with "
                           "-inf (key j of a block starting at start is position start + j)")
def flash_block_causal(learner: Learner) -> None:
    q, k, v = _qkv(2, 2, t=9, s=9, d=8, seed=12)
    for block_n in (2, 4):
        o, _ = _block_call(learner, q, k, v, block_n, True, 0)
        expect_tensor(o, reference_attention(q, k, v, True, 0)[0],
                      f"o_block (causal=True, q_offset=0, block_n={block_n})")


@CHECKS.add(points=1, hint="row i of the block is the query at position q_offset + i: it sees keys "
                           "j <= q_offset + i, not j <= i")
def flash_block_causal_offset(learner: Learner) -> None:
    q, k, v = _qkv(2, 2, t=12, s=12, d=8, seed=13)
    for start, rows in ((4, 4), (8, 4)):  # later query blocks of a prefill
        q_block = q[..., start:start + rows, :]
        o, _ = _block_call(learner, q_block, k, v, 4, True, start)
        expect_tensor(o, reference_attention(q_block, k, v, True, start)[0],
                      f"o_block for query rows {start}..{start + rows - 1} (q_offset={start})")
    q, k, v = _qkv(1, 2, t=3, s=11, d=8, seed=14)  # decoding: 3 new queries after 8 cached keys
    o, _ = _block_call(learner, q, k, v, 4, True, 8)
    expect_tensor(o, reference_attention(q, k, v, True, 8)[0], "o_block for 3 queries after 8 cached keys (q_offset=8)")


@CHECKS.add(points=1, hint="with causal=True, key blocks that start after the last row's position are hidden "
                           "from every row: stop the loop at min(q_offset + rows, s) instead of visiting them")
def flash_block_skips_tiles_above_the_diagonal(learner: Learner) -> None:
    calls: list[int] = []

    def counting_update(m, l, acc, scores_block, v_block):
        calls.append(scores_block.shape[-1])
        return reference_online_softmax_update(m, l, acc, scores_block, v_block)

    q, k, v = _qkv(1, 2, t=16, s=16, d=8, seed=15)
    for rows, s, q_offset, causal in ((4, 16, 0, True), (4, 16, 5, True), (3, 16, 13, True), (4, 10, 0, False)):
        calls.clear()
        _block_call(learner, q[..., :rows, :], k[..., :s, :], v[..., :s, :], 4, causal, q_offset, counting_update)
        expected = visited_blocks(rows, s, 4, causal, q_offset)
        if len(calls) != expected or max(calls, default=0) > 4:
            fail(f"flash_forward_block({rows} rows, s={s}, block_n=4, causal={causal}, q_offset={q_offset}) called "
                 f"online_softmax_update {len(calls)} times with blocks of {calls} keys; expected once per key "
                 f"block that a row can see: {expected} blocks of at most 4 keys")


# --------------------------------------------------------------------------- the Triton kernel
def _root_cause(error: BaseException) -> BaseException:
    """The exception raised inside the kernel: the interpreter re-raises it wrapped."""
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


def _learner_kernel(learner: Learner) -> Any:
    kernel = learner.namespace.get(KERNEL)
    if kernel is None:
        raise CheckFailed(f"{KERNEL} is not defined: run its cell, and fix any error that cell shows",
                          wrong_answer=False)
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        raise CheckFailed("Triton is not installed: pip install -e '.[triton]'", wrong_answer=False) from None
    if isinstance(kernel, InterpretedFunction):
        return kernel
    if callable(kernel) and hasattr(kernel, "__getitem__"):
        raise CheckFailed(f"{KERNEL} was compiled for a GPU, but it is graded in Triton's interpreter: run the "
                          f"notebook's first cell (it sets TRITON_INTERPRET=1), then the kernel's cell",
                          wrong_answer=False)
    raise CheckFailed(f"{KERNEL} is not a Triton kernel but {type(kernel).__name__}: decorate it with @triton.jit",
                      wrong_answer=False)


def launch_kernel(learner: Learner, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                  block_m: int = 16, block_n: int = 16,
                  query_tiles: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the learner's kernel as the notebook's ``flash_forward`` does: ``q (b, h, t, d)``,
    ``k, v (b, h, s, d)`` -> ``o (b, h, t, d)``, natural ``lse (b, h, t)``. ``query_tiles`` limits the
    grid to the first query tiles (the rows of the others stay 0)."""
    kernel = _learner_kernel(learner)
    b, h, t, d = q.shape
    s = k.shape[2]
    q, k, v = (x.clone().contiguous() for x in (q, k, v))
    o, lse = torch.zeros_like(q), torch.zeros(b, h, t)
    tiles = -(-t // block_m) if query_tiles is None else query_tiles
    try:
        kernel[(tiles, b * h)](q, k, v, o, lse, t, s, LOG2_E / math.sqrt(d),
                               CAUSAL=causal, HEAD_DIM=d, BLOCK_M=block_m, BLOCK_N=block_n)
    except Exception as error:  # noqa: BLE001 - any error in the learner's kernel is a failed check
        cause = _root_cause(error)
        if isinstance(cause, NotImplementedError):
            raise CheckFailed(f"{KERNEL} is not implemented yet (it raises NotImplementedError)",
                              wrong_answer=False) from None
        raise CheckFailed(f"{KERNEL} raised {type(cause).__name__}: {one_line(cause)}") from None
    return o, lse


@CHECKS.add(points=2, hint="scores = tl.dot(q, tl.trans(k)) * qk_scale are in base-2 units (qk_scale includes "
                           "log2(e)), so every exponential is tl.exp2; rescale l_i and acc by exp2(m_i - m_new); "
                           "mask keys past S with -inf")
def flash_kernel_matches_attention(learner: Learner) -> None:
    q, k, v = _qkv(2, 1, t=21, s=37, d=16, seed=20)  # partial tiles of queries and keys, two heads
    o, _ = launch_kernel(learner, q, k, v, causal=False)
    expect_tensor(o, reference_attention(q, k, v, False, 0)[0], f"O of {KERNEL} (causal=False, b=2, t=21, s=37)")


@CHECKS.add(points=1, hint="in base-2 units the row's log2-sum-exp2 is m_i + log2(l_i); LSE stores the natural "
                           "logarithm, so multiply it by ln(2)")
def flash_kernel_logsumexp(learner: Learner) -> None:
    q, k, v = _qkv(1, 1, t=21, s=37, d=16, seed=22)
    _, lse = launch_kernel(learner, q, k, v, causal=False)
    expect_tensor(lse, reference_attention(q, k, v, False, 0)[1], f"LSE of {KERNEL} (causal=False, t=21, s=37)")


@CHECKS.add(points=2, hint="with CAUSAL, key offs_n is allowed for row offs_m when offs_n <= offs_m + (S - T): "
                           "tl.where(allowed, scores, -inf) before the row max")
def flash_kernel_causal(learner: Learner) -> None:
    for (t, block_m, block_n), seed in (((40, 16, 16), 23), ((35, 32, 16), 24)):
        q, k, v = _qkv(1, 1, t=t, s=t, d=16, seed=seed)
        o, _ = launch_kernel(learner, q, k, v, causal=True, block_m=block_m, block_n=block_n)
        expect_tensor(o, reference_attention(q, k, v, True, 0)[0],
                      f"O of {KERNEL} (causal=True, t=s={t}, BLOCK_M={block_m}, BLOCK_N={block_n})")


@CHECKS.add(points=1, hint="when T < S the queries are the LAST T positions: row offs_m is at position "
                           "offs_m + S - T, both in the causal mask and in the loop's end")
def flash_kernel_causal_decoding(learner: Learner) -> None:
    for (t, s), seed in (((1, 37), 25), ((5, 37), 26), ((20, 45), 27)):
        q, k, v = _qkv(1, 1, t=t, s=s, d=16, seed=seed)
        o, _ = launch_kernel(learner, q, k, v, causal=True)
        expect_tensor(o, reference_attention(q, k, v, True, s - t)[0], f"O of {KERNEL} (causal=True, t={t}, s={s})")


@CHECKS.add(points=1, hint="with CAUSAL, a query tile's last row sees keys up to start_m + BLOCK_M - 1 + S - T: "
                           "end the key loop at min(start_m + BLOCK_M + S - T, S) and never load the tiles after it")
def flash_kernel_skips_tiles_above_the_diagonal(learner: Learner) -> None:
    # Only the first query tile runs. Keys from the end of the tile holding its last visible key on
    # hold NaN: a kernel that never loads them computes exactly what it computes on clean inputs.
    t, block_m, block_n = 64, 16, 16
    q, k, v = _qkv(1, 1, t=t, s=t, d=16, seed=28)
    clean, clean_lse = launch_kernel(learner, q, k, v, causal=True, block_m=block_m, block_n=block_n, query_tiles=1)
    if not (torch.isfinite(clean).all() and torch.isfinite(clean_lse).all()):
        fail(f"the first query tile's O or LSE is NaN or inf (causal=True, t=s={t}), so whether the kernel reads "
             f"tiles above the diagonal cannot be seen")
    poisoned_k, poisoned_v = k.clone(), v.clone()
    never_needed = -(-block_m // block_n) * block_n
    poisoned_k[..., never_needed:, :] = float("nan")
    poisoned_v[..., never_needed:, :] = float("nan")
    o, lse = launch_kernel(learner, q, poisoned_k, poisoned_v, causal=True, block_m=block_m, block_n=block_n,
                           query_tiles=1)
    if not (torch.equal(o, clean) and torch.equal(lse, clean_lse)):
        fail(f"the first query tile's output changes when keys {never_needed}..{t - 1}, which none of its rows can "
             f"see, hold NaN: the kernel loads key tiles above the diagonal")

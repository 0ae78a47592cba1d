"""Right values, but with CAUSAL the key loop still runs to S: it loads and masks the
tiles above the diagonal, that no row of the query tile can see."""
import triton
import triton.language as tl

EXPECT_FAIL = {"flash_kernel_skips_tiles_above_the_diagonal"}


@triton.jit
def flash_forward_kernel(Q, K, V, O, LSE, T, S, qk_scale,
                         CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q = tl.load(Q + bh * T * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    k_base = K + bh * S * HEAD_DIM
    v_base = V + bh * S * HEAD_DIM
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    shift = S - T
    end = S
    if CAUSAL:
        end = S
    for start_n in range(0, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        key_ok = offs_n < S
        k = tl.load(k_base + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=key_ok[:, None], other=0.0)
        v = tl.load(v_base + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=key_ok[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k)) * qk_scale
        allowed = key_ok[None, :]
        if CAUSAL:
            allowed = allowed & (offs_n[None, :] <= offs_m[:, None] + shift)
        scores = tl.where(allowed, scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p, v)
        m_i = m_new
    tl.store(O + bh * T * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :], acc / l_i[:, None],
             mask=row_ok[:, None])
    tl.store(LSE + bh * T + offs_m, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=row_ok)

"""The SwiGLU width rounded down to a multiple of multiple_of instead of up."""
EXPECT_FAIL = {"swiglu_hidden_dim_matches_presets", "swiglu_hidden_dim_rounds_up"}


def swiglu_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> int:
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * (hidden // multiple_of)

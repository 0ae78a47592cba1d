"""wk and wv counted as (dim, dim), as if every model had as many key/value heads as query heads."""
EXPECT_FAIL = {"count_parameters_grouped_query"}


def count_parameters(config) -> int:
    c, f, v = config.dim, config.ffn_hidden_dim, config.vocab_size
    per_layer = 4 * c * c + 3 * c * f + 2 * c
    return v * c * (1 if config.tie_embeddings else 2) + config.n_layers * per_layer + c

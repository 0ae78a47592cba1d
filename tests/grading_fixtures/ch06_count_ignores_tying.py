"""The output head counted even when it is the embedding matrix (tie_embeddings)."""
EXPECT_FAIL = {"count_parameters_tied_embeddings"}


def count_parameters(config) -> int:
    c, f, v = config.dim, config.ffn_hidden_dim, config.vocab_size
    kv_dim = config.n_kv_heads * config.head_dim
    per_layer = 2 * c * c + 2 * c * kv_dim + 3 * c * f + 2 * c
    return 2 * v * c + config.n_layers * per_layer + c

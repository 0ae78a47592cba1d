"""The parameter count without the RMSNorm weights (two per layer and the final one)."""
EXPECT_FAIL = {"count_parameters_llama2_7b", "count_parameters_grouped_query", "count_parameters_tied_embeddings"}


def count_parameters(config) -> int:
    c, f, v = config.dim, config.ffn_hidden_dim, config.vocab_size
    kv_dim = config.n_kv_heads * config.head_dim
    per_layer = 2 * c * c + 2 * c * kv_dim + 3 * c * f
    return v * c * (1 if config.tie_embeddings else 2) + config.n_layers * per_layer

import torch

from minillama.train import build_adamw, split_decay_params

from train_helpers import new_model


def test_matrices_decay_norms_and_embeddings_do_not():
    model = new_model(n_layers=2)
    decay, no_decay = (dict(group) for group in split_decay_params(model))
    assert set(no_decay) == {"tok_embeddings.weight", "norm.weight"} | {
        f"layers.{i}.{n}.weight" for i in range(2) for n in ("attention_norm", "ffn_norm")}
    assert "output.weight" in decay and "layers.1.feed_forward.w2.weight" in decay
    assert len(decay) + len(no_decay) == len(list(model.parameters()))


def test_tied_embedding_is_one_parameter_and_not_decayed():
    model = new_model(tie_embeddings=True)
    decay, no_decay = (dict(group) for group in split_decay_params(model))
    assert "output.weight" not in decay and "output.weight" not in no_decay
    assert "tok_embeddings.weight" in no_decay


def test_llama2_hyperparameters_and_decay_applied_only_to_the_decay_group():
    model = new_model()
    optimizer, names = build_adamw(model, lr=0.5, weight_decay=0.1)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert all(g["betas"] == (0.9, 0.95) and g["eps"] == 1e-5 for g in optimizer.param_groups)
    params = dict(model.named_parameters())
    assert names == [n for g in split_decay_params(model) for n, _ in g]
    before = {n: p.detach().clone() for n, p in params.items()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only decoupled weight decay moves a weight
    optimizer.step()
    torch.testing.assert_close(params["output.weight"], before["output.weight"] * (1 - 0.5 * 0.1))
    assert torch.equal(params["tok_embeddings.weight"], before["tok_embeddings.weight"])
    assert torch.equal(params["norm.weight"], before["norm.weight"])

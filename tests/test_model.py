"""The model: initialisation, padding invariance, the loss and the reward head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minillama.generate import stacked_projections
from minillama.model import Llama, LlamaRewardModel, positions_from_mask
from minillama.sequences import causal_lm_loss


def test_init_is_deterministic_per_seed(tiny_config) -> None:
    config = tiny_config()
    a, b, c = Llama(config, seed=1), Llama(config, seed=1), Llama(config, seed=2)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        if not name.endswith("norm.weight"):
            assert not torch.equal(pa, pc), name


def test_init_scales_residual_projections(tiny_config) -> None:
    model = Llama(tiny_config(n_layers=8, dim=128, n_heads=4, vocab_size=8), seed=0)
    std = model.config.init_std
    assert model.layers[0].attention.wq.weight.std().item() == pytest.approx(std, rel=0.03)
    assert model.layers[0].attention.wo.weight.std().item() == pytest.approx(std / 4, rel=0.03)  # 1/sqrt(2*8)
    assert model.layers[3].feed_forward.w2.weight.std().item() == pytest.approx(std / 4, rel=0.03)
    assert torch.equal(model.norm.weight, torch.ones(128))


def test_tied_embeddings_share_storage(tiny_config) -> None:
    model = Llama(tiny_config(tie_embeddings=True))
    assert model.output.weight is model.tok_embeddings.weight
    assert model.output.weight.data_ptr() == model.tok_embeddings.weight.data_ptr()


def test_positions_from_mask_count_real_tokens() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 2, 2]]


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_left_padding_does_not_change_real_logits(random_llama, backend: str) -> None:
    model = random_llama(n_kv_heads=2)
    model.attn_backend = backend
    ids = torch.randint(1, 97, (1, 9), generator=torch.Generator().manual_seed(0))
    padded = torch.cat((torch.zeros(1, 4, dtype=torch.long), ids), dim=1)
    mask = torch.cat((torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded, attention_mask=mask)[:, 4:], model(ids), rtol=0, atol=1e-5)


def test_causal_lm_loss_is_next_token_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(2, 5, 11, generator=gen), torch.randint(0, 11, (2, 5), generator=gen)
    labels[1, 3] = -100
    log_probs = logits.log_softmax(-1)
    terms = [-log_probs[b, i, labels[b, i + 1]] for b in range(2) for i in range(4) if labels[b, i + 1] != -100]
    torch.testing.assert_close(causal_lm_loss(logits, labels), torch.stack(terms).mean())
    summed = causal_lm_loss(logits, labels, reduction="sum")
    torch.testing.assert_close(summed, torch.stack(terms).sum())


def test_untrained_loss_is_near_log_vocab(tiny_config) -> None:
    model = Llama(tiny_config(), seed=0)
    ids = torch.randint(0, 97, (4, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        loss = causal_lm_loss(model(ids), ids)
    assert loss.item() == pytest.approx(math.log(97), abs=0.05)


def test_loss_gradients_reach_every_parameter(random_llama) -> None:
    model = random_llama(tie_embeddings=True).train()
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(5))
    causal_lm_loss(model(ids), ids).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- reward model
def reward_model(tiny_config, seed: int = 0) -> LlamaRewardModel:
    rm = LlamaRewardModel(tiny_config(n_kv_heads=2), seed=seed)
    with torch.no_grad():  # a score head that is not near zero, so differences show
        rm.score.weight.copy_(torch.randn(rm.score.weight.shape, generator=torch.Generator().manual_seed(seed)))
    return rm.eval()


def test_reward_reads_the_last_real_token_under_any_padding(tiny_config) -> None:
    rm = reward_model(tiny_config)
    gen = torch.Generator().manual_seed(6)
    short, long = torch.randint(1, 97, (1, 5), generator=gen), torch.randint(1, 97, (1, 9), generator=gen)
    pad = torch.zeros(1, 4, dtype=torch.long)
    ones, zeros = torch.ones(1, 5, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)
    with torch.no_grad():
        alone = torch.cat((rm(short), rm(long)))
        left = rm(torch.cat((torch.cat((pad, short), 1), long)),
                  attention_mask=torch.cat((torch.cat((zeros, ones), 1), torch.ones(1, 9, dtype=torch.long))))
        right = rm(torch.cat((torch.cat((short, pad), 1), long)),
                   attention_mask=torch.cat((torch.cat((ones, zeros), 1), torch.ones(1, 9, dtype=torch.long))))
        # Scoring a padding position instead would give a different number.
        at_pad = rm(torch.cat((short, pad), 1))
    assert alone.shape == (2,)
    torch.testing.assert_close(left, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(right, alone, rtol=0, atol=1e-5)
    assert (at_pad[0] - alone[0]).abs() > 1e-3


def test_reward_from_lm_copies_the_backbone(random_llama) -> None:
    lm = random_llama(n_kv_heads=2)
    rm = LlamaRewardModel.from_lm(lm)
    lm_state, rm_state = lm.state_dict(), rm.state_dict()
    assert set(rm_state) == set(lm_state) - {"output.weight"} | {"score.weight"}
    for name, tensor in rm_state.items():
        if name != "score.weight":
            assert torch.equal(tensor, lm_state[name]), name
    assert rm.config == lm.config and rm.config is not lm.config
    ids = torch.randint(0, 97, (3, 7), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(rm.hidden_states(ids), lm.hidden_states(ids), rtol=0, atol=0)
        assert torch.equal(rm(ids), torch.zeros(3))  # the head starts at zero
    # A copy, not a view: training the reward model leaves the language model alone.
    with torch.no_grad():
        rm.tok_embeddings.weight.add_(1.0)
    assert not torch.equal(rm.tok_embeddings.weight, lm.tok_embeddings.weight)


def test_reward_from_tied_bf16_lm(random_llama) -> None:
    lm = random_llama(tie_embeddings=True).to(torch.bfloat16)
    rm = LlamaRewardModel.from_lm(lm)
    assert rm.dtype == torch.bfloat16
    assert torch.equal(rm.tok_embeddings.weight, lm.tok_embeddings.weight)


def test_reward_gradient_flows_from_a_ranking_loss(tiny_config) -> None:
    rm = reward_model(tiny_config).train()
    gen = torch.Generator().manual_seed(8)
    chosen, rejected = torch.randint(0, 97, (2, 6), generator=gen), torch.randint(0, 97, (2, 6), generator=gen)
    loss = -F.logsigmoid(rm(chosen) - rm(rejected)).mean()
    loss.backward()
    assert rm.score.weight.grad.abs().sum() > 0
    assert rm.layers[0].attention.wq.weight.grad.abs().sum() > 0


def test_stacked_projections_give_the_plain_outputs_and_follow_the_weights(random_llama) -> None:
    model = random_llama(n_heads=4, n_kv_heads=2)
    ids = torch.randint(0, model.config.vocab_size, (3, 9))
    step = ids[:, :1]
    with torch.no_grad():
        plain = model(step)
        with stacked_projections(model):  # q|k|v and w1|w3 as one matmul each
            stacked = model(step)
            assert not any("wq" in name for name, _ in model.named_parameters())
    assert torch.allclose(plain, stacked, atol=1e-5)
    assert {name for name, _ in model.named_parameters()} == set(Llama(model.config).state_dict())  # put back
    # The stacked copy kept for the next call follows the weights: an optimizer step, then a load.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    optimizer.step()
    with torch.no_grad(), stacked_projections(model):
        after_step = model(step)
    assert not torch.allclose(after_step, stacked, atol=1e-3)
    assert torch.allclose(after_step, model(step), atol=1e-5)
    fresh = Llama(model.config, seed=123)
    model.load_state_dict(fresh.state_dict())
    with torch.no_grad(), stacked_projections(model):
        assert torch.allclose(model(step), fresh(step), atol=1e-5)


def test_runtime_settings_are_validated_on_the_model(tiny_config) -> None:
    with pytest.raises(ValueError, match="attn_backend must be one of"):
        Llama(tiny_config(), attn_backend="flash")
    model = Llama(tiny_config(), max_batch_size=2)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, max_batch_size=2\]"):
        model.new_cache(3)
    model.max_batch_size = None
    assert model.new_cache(3).batch_size == 3

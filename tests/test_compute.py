"""The compute axis beyond the chapter: the FLOPs formulas match a hand count of a tiny Llama's parameters; token counts
add up and refuse mismatched batches; the implied λ is rollout tokens per D_RL token."""
import math

import pytest

from sftrl.compute import TokenCount, count_tokens, counted_rl_flops, gflops, implied_lambda, rl_flops, sft_flops


def test_flops_hand_count_on_a_tiny_config():
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=100, hidden_size=8, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
                         num_key_value_heads=1, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    head_dim = 8 // 2
    per_layer = 8 * 8 + 2 * 8 * head_dim + 8 * 8 + 3 * 8 * 24 + 2 * 8      # q, k+v (1 kv head), o, mlp, 2 norms
    n = 100 * 8 + 3 * per_layer + 8 + 8 * 100                               # embeddings, layers, final norm, lm head
    assert sum(p.numel() for p in model.parameters()) == n
    assert sft_flops(n, 10, 20) == 6 * n * 30
    assert rl_flops(n, 10, 20, 5.1) == pytest.approx(6 * n * 30 + 2 * n * 5.1 * 20)
    assert rl_flops(n, 10, 0, 6) == sft_flops(n, 10, 0)
    assert gflops(sft_flops(10 ** 9, 1, 0)) == 6


def test_token_counts():
    batch = count_tokens([10, 12, 7], [3, 0, 5], image_tokens=[16, 16, 0])
    assert batch == TokenCount(29, 32, 8) and batch.total == 69
    assert count_tokens([], []) == TokenCount()
    trained = batch + batch                                       # two epochs over D_RL = batch.total tokens
    assert implied_lambda(batch, batch.total) == 1.0 and math.isnan(implied_lambda(batch, 0))
    assert implied_lambda(batch + batch, batch.total) == 2.0      # a scoring pass over the same turns doubles it
    assert counted_rl_flops(7, 100, trained, batch) == 6 * 7 * (100 + 138) + 2 * 7 * 69
    # with D_RL and λ = the implied λ, the paper's formula is the counted one for one epoch; a second adds 6N·D_RL
    assert rl_flops(7, 100, batch.total, implied_lambda(batch, batch.total)) == pytest.approx(counted_rl_flops(7, 100, batch, batch))
    assert counted_rl_flops(7, 100, trained, batch) - counted_rl_flops(7, 100, batch, batch) == 6 * 7 * batch.total
    for bad in (lambda: count_tokens([1], [1, 2]), lambda: count_tokens([1, 2], [1, 2], image_tokens=[1]),
                lambda: count_tokens([-1], [1])):
        with pytest.raises(ValueError): bad()

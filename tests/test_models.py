"""Policies: tokenizer round-trips, assistant masks, and load_policy on tiny random configs of the
architectures the paper preset may use (Llama, Mllama, Qwen2-VL), built here with no download."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import (MllamaConfig, MllamaForConditionalGeneration, Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration, LlamaConfig, LlamaForCausalLM)

from sftrl.models import (build_tokenizer, build_text_policy, build_vision_policy, load_policy, save_policy,
                          task_texts, count_parameters, POLICY_SIZES)


@pytest.fixture(scope='module')
def tokenizer():
    return build_tokenizer(task_texts(n=20), vocab_size=400)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer(text)['input_ids']) == text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40)), min_size=1, max_size=4))
def test_assistant_mask_is_exactly_the_answers(tokenizer, turns):
    chat = [m for user, answer in turns for m in ({'role': 'user', 'content': user}, {'role': 'assistant', 'content': answer})]
    enc = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(enc['input_ids'], enc['assistant_masks']) if m]
    assert tokenizer.decode(masked) == ''.join(answer + '<|eos|>' for _, answer in turns)


def test_tokenizer_saves_and_loads(tokenizer, tmp_path):
    from transformers import AutoTokenizer
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = task_texts(n=2)[0]
    assert loaded(text)['input_ids'] == tokenizer(text)['input_ids']
    assert loaded.chat_template == tokenizer.chat_template


def _generate_text(policy, tokenizer):
    ids = tokenizer('Cards: [1, 2, 3, 4]', return_tensors='pt')
    # an untrained model may pick EOS first: min_new_tokens asks for exactly 3 new tokens whatever the weights
    out = policy.model.generate(**ids, min_new_tokens=3, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == ids['input_ids'].shape[1] + 3


def test_tiny_random_llama_loads_and_generates(tokenizer, tmp_path):
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)   # the same random weights on every run
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    policy = load_policy(tmp_path)
    assert policy.kind == 'text'
    _generate_text(policy, policy.tokenizer)


def test_tiny_random_mllama_loads_and_generates(tokenizer, tmp_path):
    config = MllamaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, image_size=28, patch_size=14, max_num_tiles=4, vision_output_dim=64,
                           intermediate_layers_indices=[0]),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, cross_attention_layers=[1],
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id))
    torch.manual_seed(0)   # the same random weights on every run
    MllamaForConditionalGeneration(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    policy = load_policy(tmp_path)
    assert policy.kind == 'vision' and type(policy.model).__name__ == 'MllamaForConditionalGeneration'
    _generate_text(policy, policy.tokenizer)


def test_tiny_random_qwen2_vl_loads_and_generates(tokenizer, tmp_path):
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1,
                         rope_scaling={'type': 'mrope', 'mrope_section': [2, 3, 3]}, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2))
    torch.manual_seed(0)   # the same random weights on every run
    Qwen2VLForConditionalGeneration(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    policy = load_policy(tmp_path)
    assert type(policy.model).__name__ == 'Qwen2VLForConditionalGeneration'
    _generate_text(policy, policy.tokenizer)


def test_vision_policy_round_trips_with_an_image(tokenizer, tmp_path):
    policy = build_vision_policy(tokenizer, 'smoke', seed=3)
    chat = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Which cards?'}]}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    image = np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8)
    inputs = policy.processor(images=[image], text=[text], return_tensors='pt')
    save_policy(policy, tmp_path)
    loaded = load_policy(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded.model(**inputs).logits, policy.model(**inputs).logits)
    out = loaded.model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == inputs['input_ids'].shape[1] + 2


def test_policies_are_deterministic_and_sized(tokenizer):
    state = torch.random.get_rng_state()
    a, b = build_text_policy(tokenizer, 'smoke', seed=5), build_text_policy(tokenizer, 'smoke', seed=5)
    assert torch.equal(torch.random.get_rng_state(), state), 'building a policy must not move the global RNG'
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    tiny = count_parameters(build_text_policy(tokenizer, 'tiny').model)
    assert 2e6 < tiny < 10e6


def test_missing_and_unsupported_checkpoints_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match='never downloads'):
        load_policy(tmp_path / 'nothing')
    (tmp_path / 'config.json').write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match='not supported'):
        load_policy(tmp_path)

"The generation engine beyond the chapter: long multi-turn chats, hostile continuations, evaluations played both ways."
import pytest
import torch

from sftrl.evaluate import evaluate
from sftrl.generate import GenerationEngine, ModelPolicy, _answer_ids, encode, generate, model_policy
from sftrl.models import Policy, build_text_policy, build_tokenizer, build_vision_policy, task_texts
from sftrl.tasks import evaluation_seeds, make_env, start_episode

FEEDBACK = 'You failed this trial because the formula is wrong.'


@pytest.fixture(scope='module')
def policy():
    "A random smoke model with its weights scaled up 4x: its greedy answers vary (at the usual scale it repeats one token)."
    policy = build_text_policy(build_tokenizer(task_texts(n=40), 400), 'smoke', seed=0)
    with torch.no_grad():
        for p in policy.model.parameters(): p.mul_(4)
    return policy


def openings(task, n):
    env = make_env(task, 'id')
    return [{'messages': start_episode(env, task, 'id', s, i)[1]['messages']} for i, s in enumerate(evaluation_seeds(0, n))]


def greedy_from_ids(policy, ids, max_new_tokens):
    "transformers' generate on one prompt's ids, greedy."
    t = policy.tokenizer
    out = policy.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False,
                                max_new_tokens=max_new_tokens, eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id)
    return _answer_ids(out[0, len(ids):], t)


def then(item, answer, feedback=FEEDBACK):
    return {'messages': item['messages'] + [{'role': 'assistant', 'content': answer}, {'role': 'user', 'content': feedback}]}


def test_five_turns_answer_as_generate_on_the_ids_generated(policy):
    engine, batch = GenerationEngine(batch_size=3, group_rows=2), openings('gp-l', 5)
    for turn in range(5):
        out = engine(policy, batch, max_new_tokens=10)
        for prompt, answer in zip(out.prompt_ids, out.answer_ids):
            assert answer == greedy_from_ids(policy, prompt, 10)
        if turn: assert engine.stats['reused'] > engine.stats['prefilled']
        batch = [then(item, text) for item, text in zip(batch, out.texts)]


def test_a_chat_not_continued_from_the_previous_call_is_read_afresh(policy):
    engine, batch = GenerationEngine(), openings('virl-l', 3)
    first = engine(policy, batch, max_new_tokens=8)
    altered = [then(batch[0], first.texts[0] + ' (edited)'), then(batch[1], first.texts[1], 'another feedback'), batch[2]]
    out = engine(policy, altered, max_new_tokens=8)
    assert out.prompt_ids[0] == encode(policy, altered[:1])['input_ids'][0].tolist()       # an answer the engine did not give
    assert out.prompt_ids[1][:len(first.prompt_ids[1]) + len(first.answer_ids[1])] == first.prompt_ids[1] + first.answer_ids[1]
    for prompt, answer in zip(out.prompt_ids, out.answer_ids):
        assert answer == greedy_from_ids(policy, prompt, 8)
    assert GenerationEngine()(policy, []).texts == []


@pytest.fixture(scope='module')
def vision_policy():
    "A random smoke vision model, its language weights scaled up 4x (varied answers, as the text one's)."
    policy = build_vision_policy(build_tokenizer(task_texts(n=40), 400), 'smoke', seed=0)
    with torch.no_grad():
        for p in policy.model.get_decoder().parameters(): p.mul_(4)
    return policy


@pytest.mark.parametrize('task', ['gp-vl', 'virl-vl'])
@pytest.mark.parametrize('temperature', [0.0, 1.0])
def test_vision_evaluation_rows_are_generates(vision_policy, task, temperature):
    "The engine with images in its cache plays a vision evaluation as generate does, image tokens counted alike."
    answer = model_policy(vision_policy, temperature, max_new_tokens=16)
    engine = evaluate(answer, task, 'id', n=6, batch_size=6, progress=False)
    reference = ModelPolicy(vision_policy, temperature, max_new_tokens=16, generate=generate)
    today = evaluate(reference, task, 'id', n=6, batch_size=3, progress=False)
    for ours, theirs in zip(engine, today):
        assert ours.to_dict('records') == theirs.to_dict('records')
    assert isinstance(answer.generate, GenerationEngine) and answer.tokens == reference.tokens
    assert engine[0].veri_step.max() >= 2 and answer.generate.stats['reused'] > 0


def test_chats_share_cached_image_tokens_only_for_the_same_pixels(vision_policy):
    "Two chats with the same text and different images share the prefix up to the image, never through it."
    env = make_env('gp-vl', 'id')
    (a_obs, a), (b_obs, b) = env.reset(seed=1), env.reset(seed=2)
    same_text = [{'messages': a['messages'], 'image': a_obs['image']}, {'messages': a['messages'], 'image': b_obs['image']}]
    engine = GenerationEngine(retokenize=True)
    first = engine(vision_policy, same_text[:1], max_new_tokens=6)
    before = engine.stats['reused']
    second = engine(vision_policy, same_text, max_new_tokens=6)   # the second row starts like the first, up to its image
    assert second.answer_ids == generate(vision_policy, same_text, max_new_tokens=6).answer_ids
    assert first.answer_ids[0] == second.answer_ids[0]
    ids = encode(vision_policy, same_text[:1])['input_ids'][0].tolist()
    image_at = ids.index(vision_policy.model.config.image_token_id)
    assert engine.stats['reused'] - before == (len(ids) - 1) + image_at   # the same chat again: all but its last id; the other: up to its image


@pytest.mark.parametrize('task', ['gp-l', 'virl-l'])
@pytest.mark.parametrize('temperature', [0.0, 1.0])
def test_evaluation_rows_are_generates(policy, task, temperature):
    "model_policy's engine re-tokenizes each chat as generate does: the same rows, greedy or sampled."
    engine = evaluate(model_policy(policy, temperature, max_new_tokens=20), task, 'id', n=10, batch_size=10, progress=False)
    today = evaluate(ModelPolicy(policy, temperature, max_new_tokens=20, generate=generate), task, 'id', n=10, batch_size=4, progress=False)
    for ours, theirs in zip(engine, today):
        assert ours.to_dict('records') == theirs.to_dict('records')
    assert engine[0].veri_step.max() >= 2


def test_the_ids_generated_are_not_the_chat_retokenized(policy):
    "Why the engine keeps the ids it generated: a random model's answer rarely tokenizes back to itself."
    engine, batch = GenerationEngine(), openings('gp-l', 8)
    first = engine(policy, batch, max_new_tokens=20)
    second = engine(policy, [then(item, text) for item, text in zip(batch, first.texts)], max_new_tokens=20)
    retokenized = [encode(policy, [then(item, text)])['input_ids'][0].tolist() for item, text in zip(batch, first.texts)]
    assert sum(r != p for r, p in zip(retokenized, second.prompt_ids)) >= 4


def test_sampled_evaluation_rows_do_not_depend_on_the_episodes_in_flight(policy):
    rows = [evaluate(model_policy(policy, temperature=1.0, seed=3, max_new_tokens=16), 'gp-l', 'id', n=8, batch_size=b,
                     progress=False)[0] for b in (3, 8)]
    assert rows[0].to_dict('records') == rows[1].to_dict('records')


class Stopping:
    "The policy's tokenizer with another end-of-sequence id."
    def __init__(self, tokenizer, eos: int): self.tokenizer, self.eos_token_id = tokenizer, eos
    def __call__(self, *args, **kwargs): return self.tokenizer(*args, **kwargs)
    def __getattr__(self, name): return getattr(self.tokenizer, name)


def test_rows_that_end_early_leave_the_decoding_and_keep_their_chats(policy):
    "An end-of-sequence the random model writes often (a stand-in tokenizer): rows end at many steps, the rest move up."
    batch = openings('gp-l', 12) + openings('virl-l', 12)
    answers = generate(policy, batch, max_new_tokens=30).answer_ids
    spread = lambda t: len({a.index(t) if t in a else -1 for a in answers})   # at how many different steps rows would end
    stopping = Policy(policy.model, Stopping(policy.tokenizer, max({t for a in answers for t in a}, key=spread)))
    engine, reference = GenerationEngine(batch_size=24, group_rows=5), generate(stopping, batch, max_new_tokens=30)
    out = engine(stopping, batch, max_new_tokens=30)
    assert len({len(a) for a in out.answer_ids}) > 3 and out.answer_ids == reference.answer_ids
    second = engine(stopping, [then(item, text) for item, text in zip(batch, out.texts)], max_new_tokens=30)
    for prompt, answer in zip(second.prompt_ids, second.answer_ids):
        assert answer == greedy_from_ids(stopping, prompt, 30)

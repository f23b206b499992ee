"Rollouts beyond the chapter: real multi-turn chats, masks and padding, determinism, episode bookkeeping, vision."
import pytest
import torch

from sftrl.compute import TokenCount
from sftrl.generate import Generation, encode, generate
from sftrl.models import build_text_policy, build_tokenizer, build_vision_policy, task_texts
from sftrl.rl import (ActorCritic, Turn, ValueHead, _forwarded, _observation, _remember_chains, chains, collect, hidden_size, remember, score, score_tokens,
                      training_episodes)
from sftrl.tasks import get_task, make_env, oracle_answer

WRONG = '{"cards": ["A", "A", "A", "A"], "number": [1, 1, 1, 1], "formula": "1+1=24"}'


@pytest.fixture(scope='module')
def tokenizer():
    return build_tokenizer(task_texts(n=40), 400)


@pytest.fixture(scope='module')
def policy(tokenizer):
    return build_text_policy(tokenizer, 'smoke', seed=0)


@pytest.fixture(scope='module')
def head(policy):
    torch.manual_seed(0)
    return ValueHead(hidden_size(policy.model))


def scripted(right_on: int, task='gp-l'):
    "A generator that answers wrong until try `right_on` (0-based), then as the expert."
    def generate(policy, batch, temperature=0.0, seed=0, max_new_tokens=256):
        texts = []
        for item in batch:
            tries = sum(m['role'] == 'assistant' for m in item['messages'])
            texts.append(WRONG if tries < right_on else oracle_answer(task, {}, item['info']))
        prompts = [encode(policy, [item])['input_ids'][0].tolist() for item in batch]
        answers = [policy.tokenizer(t)['input_ids'] + [policy.tokenizer.eos_token_id] for t in texts]
        return Generation(texts, prompts, answers, TokenCount(sum(map(len, prompts)), 0, sum(map(len, answers))))
    return generate


def _by_env(turns):
    out = {}
    for t in turns: out.setdefault(t.env, []).append(t)
    return out


def test_feedback_goes_into_the_next_prompt_and_never_into_an_answer(policy, head):
    rollout = collect(policy, head, 'gp-l', steps=6, n_envs=2, seed=3, generator=scripted(right_on=2))
    decode = lambda ids: policy.tokenizer.decode(ids, skip_special_tokens=True)
    for turns in _by_env(rollout.turns).values():
        first, second, third = turns
        assert decode(first.answer_ids) == WRONG and 'You failed this trial' not in decode(first.answer_ids)
        # the next prompt holds the whole chat: the first prompt, the model's answer, then the verifier's sentence
        later = decode(second.prompt_ids)
        assert later.startswith(decode(first.prompt_ids).rstrip()[:200])
        assert WRONG in later and later.index(WRONG) < later.index('You failed this trial')
        assert decode(third.prompt_ids).count('You failed this trial') == 2
        assert [t.done for t in turns] == [False, False, True] and third.success


def test_batched_score_counts_exactly_the_answer_tokens_of_each_turn(policy, head):
    "Turns of different lengths padded together score as each alone, and as a hand sum over answer positions only."
    rollout = collect(policy, head, 'gp-l', steps=6, n_envs=2, seed=3, generator=scripted(right_on=2))
    turns = rollout.turns
    assert len({len(t.prompt_ids) + len(t.answer_ids) for t in turns}) > 1      # padding is exercised
    with torch.no_grad():
        batched = score(ActorCritic(policy.model, head), turns, 0.2, policy.tokenizer.pad_token_id)
        alone = [score(ActorCritic(policy.model, head), [t], 0.2, policy.tokenizer.pad_token_id) for t in turns]
        for k, t in enumerate(turns):
            logits = policy.model(torch.tensor([t.prompt_ids + t.answer_ids])).logits[0].float() / 0.2
            logp = torch.log_softmax(logits, -1)[len(t.prompt_ids) - 1:-1].gather(-1, torch.tensor(t.answer_ids)[:, None])[:, 0]
            hand = (logp * torch.tensor(t.weights)).sum()
            assert torch.isclose(batched[0][k], hand, atol=1e-3), (k, batched[0][k], hand)
            assert torch.isclose(batched[0][k], alone[k][0][0], atol=1e-3)
            assert torch.isclose(batched[2][k], alone[k][2][0], atol=1e-4)          # the value sees the same prompt
            assert torch.isclose(torch.tensor(t.logprob), hand, atol=1e-3)          # the stored old log-prob
            assert torch.isclose(torch.tensor(t.value), alone[k][2][0], atol=1e-4)  # and the stored old value


def test_changing_prompt_tokens_changes_no_mask(policy, head):
    "Weights live on answer positions: a turn whose answer weights are zero scores 0 whatever its prompt says."
    t = Turn(list(range(5, 40)), [50, 60, 70, policy.tokenizer.eos_token_id], [0.0] * 4, None, 0.0, 0.0)
    with torch.no_grad():
        assert score(ActorCritic(policy.model, head), [t], 0.2, policy.tokenizer.pad_token_id)[0].item() == 0.0
        one = Turn(t.prompt_ids, t.answer_ids, [0.0, 0.0, 0.0, 1.0], None, 0.0, 0.0)
        got = score(ActorCritic(policy.model, head), [one], 0.2, policy.tokenizer.pad_token_id)[0].item()
        logits = policy.model(torch.tensor([t.prompt_ids + t.answer_ids])).logits[0, -2].float() / 0.2
    assert abs(got - torch.log_softmax(logits, -1)[policy.tokenizer.eos_token_id].item()) < 1e-4


def test_a_rollout_is_a_function_of_its_seed(policy, head):
    play = lambda seed: collect(policy, head, 'gp-l', steps=6, n_envs=3, seed=seed, max_new_tokens=8)
    a, b, c = play(1), play(1), play(2)
    key = lambda r: [(t.env, t.prompt_ids, t.answer_ids, t.reward, t.done) for t in r.turns]
    assert key(a) == key(b) and a.last_values == b.last_values
    assert key(a) != key(c)


def test_episodes_and_done_flags_agree(policy, head):
    "Finished episodes in the buffer are exactly the done turns; their lengths count each environment's turns."
    rollout = collect(policy, head, 'gp-l', steps=16, n_envs=3, seed=0, generator=scripted(right_on=1))
    assert len(rollout.episodes) == sum(t.done for t in rollout.turns)
    for turns in _by_env(rollout.turns).values():
        ends = [k + 1 for k, t in enumerate(turns) if t.done]
        lengths = [b - a for a, b in zip([0] + ends, ends)]
        assert all(n == 2 for n in lengths)               # wrong once, right on the second try
    assert all(e == {'turns': 2, 'reward': e['reward'], 'success': True} for e in rollout.episodes)
    assert len(rollout.last_values) == 3


def test_viter_caps_the_tries_of_an_episode(policy, head):
    never = scripted(right_on=99)
    for viter in (1, 3):
        rollout = collect(policy, head, 'gp-l', steps=9, n_envs=3, seed=0, viter=viter, generator=never)
        assert [e['turns'] for e in rollout.episodes] == [viter] * (9 // viter)
        assert not any(t.success for t in rollout.turns) and all(t.reward < 0 for t in rollout.turns)
    assert get_task('gp-l').viter == 5
    rollout = collect(policy, head, 'gp-l', steps=10, n_envs=2, seed=0, generator=never)     # the task's budget
    assert [e['turns'] for e in rollout.episodes] == [5, 5]


def test_a_vision_policy_rolls_out_through_the_same_code(tokenizer):
    policy = build_vision_policy(tokenizer, 'smoke', seed=0)
    head = ValueHead(hidden_size(policy.model))
    rollout = collect(policy, head, 'gp-vl', steps=4, n_envs=2, seed=0, max_new_tokens=6, env_kwargs={'resolution': 64})
    assert len(rollout.turns) == 4 and all(t.pixel_values is not None for t in rollout.turns)
    assert all(t.reward < 0 for t in rollout.turns)       # random weights: every answer is refused
    with torch.no_grad():
        logprob, entropy, value = score(ActorCritic(policy.model, head), rollout.turns, 0.2, policy.tokenizer.pad_token_id)
    assert torch.allclose(logprob, torch.tensor([t.logprob for t in rollout.turns]), atol=1e-3)
    assert torch.allclose(value, torch.tensor([t.value for t in rollout.turns]), atol=1e-4)


def test_virl_turns_after_a_correct_move_start_a_new_chat(policy, head):
    "V-IRL: wrong once, then right at every position; a correct move ends no episode but opens a fresh chat."
    rollout = collect(policy, head, 'virl-l', steps=60, n_envs=2, seed=0, generator=scripted(right_on=1, task='virl-l'))
    decode = lambda ids: policy.tokenizer.decode(ids, skip_special_tokens=True)
    for turns in _by_env(rollout.turns).values():
        assert [t.reward > 0 for t in turns] == [k % 2 == 1 for k in range(len(turns))]   # wrong, right, wrong, right …
        for k, t in enumerate(turns):
            retry = k % 2 == 1
            assert ('You failed this trial' in decode(t.prompt_ids)) == retry      # only a retry carries the feedback
            assert not t.done or (retry and t.success)                               # episodes end at the route's end
    assert rollout.episodes and all(e['success'] and e['turns'] % 2 == 0 for e in rollout.episodes)


def test_remember_stores_per_token_log_probabilities_that_add_up_to_the_turns(policy, head):
    from sftrl.rl import remember
    rollout = collect(policy, head, 'gp-l', steps=4, n_envs=2, seed=1, max_new_tokens=8)
    for t in rollout.turns:
        assert len(t.token_logprobs) == len(t.answer_ids)
        assert abs(sum(w * lp for w, lp in zip(t.weights, t.token_logprobs)) - t.logprob) < 1e-4
    again = remember(ActorCritic(policy.model, head), [Turn(t.prompt_ids, t.answer_ids, t.weights, None, 0.0, 0.0) for t in rollout.turns],
                     1.0, policy.tokenizer.pad_token_id)
    assert all(abs(a.logprob - t.logprob) > 1e-6 for a, t in zip(again, rollout.turns))   # another temperature, other log-probabilities


def _openings(turns):
    first = {}
    for t in turns: first.setdefault(t.episode, (t.hand, tuple(t.prompt_ids)))
    return first


def test_a_group_plays_one_hand_per_episode_to_the_end(policy, head):
    "group_size 3 on 6 environments: every hand is dealt to 3 of them, every episode ends in the buffer, however many turns that takes."
    rollout = collect(policy, head, 'gp-l', steps=10, n_envs=6, seed=2, generator=scripted(right_on=2), group_size=3)
    assert len(rollout.turns) == 18 and len(rollout.episodes) == 6 and all(e['success'] for e in rollout.episodes)
    openings = _openings(rollout.turns)
    by_hand = {}
    for hand, opening in openings.values(): by_hand.setdefault(hand, set()).add(opening)
    assert len(by_hand) == 2 and all(len(o) == 1 for o in by_hand.values())                 # 3 episodes of one hand open alike
    assert len({next(iter(o)) for o in by_hand.values()}) == 2                              # and the two hands differ
    assert sum(t.done for t in rollout.turns) == len(rollout.episodes) == len(openings)
    assert rollout.last_values == [0.0] * 6


def test_a_group_waits_for_its_slowest_episode_before_the_next_hand(policy, head):
    "Row 0 of a batch solves its hand on a first try, every other answer is wrong: a group deals its next hand only when all its episodes ended."
    def first_row_right(policy, batch, temperature=0.0, seed=0, max_new_tokens=256):
        first_try = lambda item: not any(m['role'] == 'assistant' for m in item['messages'])
        texts = [oracle_answer('gp-l', {}, item['info']) if k == 0 and first_try(item) else WRONG for k, item in enumerate(batch)]
        prompts = [encode(policy, [item])['input_ids'][0].tolist() for item in batch]
        answers = [policy.tokenizer(t)['input_ids'] + [policy.tokenizer.eos_token_id] for t in texts]
        return Generation(texts, prompts, answers, TokenCount())
    rollout = collect(policy, head, 'gp-l', steps=6, n_envs=2, seed=0, viter=3, generator=first_row_right, group_size=2)
    # env 0 waits while env 1 tries 3 times; the second hand starts at 4 turns, and plays to its end past the 6 asked for
    assert [(t.env, t.hand) for t in rollout.turns] == [(0, 0), (1, 0), (1, 0), (1, 0), (0, 1), (1, 1), (1, 1), (1, 1)]
    assert [e['success'] for e in rollout.episodes] == [True, False, True, False]


def test_groups_must_divide_the_environments(policy, head):
    with pytest.raises(ValueError, match='n_envs must be a multiple of group_size'):
        collect(policy, head, 'gp-l', steps=4, n_envs=3, seed=0, group_size=2)


def _first_turns(rollout):
    return [t for k, t in enumerate(rollout.turns) if k == 0 or rollout.turns[k - 1].done or t.env != rollout.turns[k - 1].env]


def test_a_chat_goes_on_in_the_ids_it_was_played_in(policy, head):
    "Own sampling: each retry's prompt is the previous prompt and sampled answer, ids as played, then the verifier's reply — one chain per episode."
    rollout = collect(policy, head, 'gp-l', steps=14, n_envs=3, seed=4, temperature=1.0, max_new_tokens=12)
    by_env = _by_env(rollout.turns)
    for turns in by_env.values():
        for before, after in zip(turns, turns[1:]):
            if before.done: continue
            played = before.prompt_ids + before.answer_ids
            assert after.prompt_ids[:len(played)] == played
            reply = policy.tokenizer.decode(after.prompt_ids[len(played):])
            assert 'You failed this trial' in reply and reply.endswith('<|assistant|>')
    lengths = sorted(len(c) for c in chains(rollout.turns))
    episodes = {}
    for t in rollout.turns: episodes[t.episode] = episodes.get(t.episode, 0) + 1
    assert lengths == sorted(episodes.values())                     # a chain is an episode, played to its cut
    assert rollout.scored == TokenCount()                           # no scoring pass: generation read the old values


def test_own_sampling_opens_as_generate_samples(policy, head):
    "The first turns of a rollout are what `generate` samples from the same seed: the same prompts and answers."
    rollout = collect(policy, head, 'gp-l', steps=3, n_envs=3, seed=7, temperature=1.0, max_new_tokens=12)
    next_episode = training_episodes('gp-l', 7)
    batch = [_observation(get_task('gp-l'), *next_episode(make_env('gp-l', 'train'))) for _ in range(3)]
    out = generate(policy, batch, 1.0, seed=hash((7, 0)) % 2**63, max_new_tokens=12)
    assert [t.prompt_ids for t in rollout.turns] == out.prompt_ids and [t.answer_ids for t in rollout.turns] == out.answer_ids


@pytest.mark.parametrize('task', ['gp-l', 'gp-vl'])
def test_old_values_read_while_generating_and_packed_scores_equal_the_per_turn_scoring(tokenizer, task):
    "To 1e-5: the log-probabilities and values `collect` keeps from generation, and one packed forward per chain, against scoring each turn alone."
    policy = build_text_policy(tokenizer, 'smoke', seed=0) if task == 'gp-l' else build_vision_policy(tokenizer, 'smoke', seed=0)
    head = ValueHead(hidden_size(policy.model))
    rollout = collect(policy, head, task, steps=8, n_envs=2, seed=1, temperature=1.0, max_new_tokens=10,
                      env_kwargs={'resolution': 64} if task == 'gp-vl' else None)
    assert max(len(c) for c in chains(rollout.turns)) > 1
    actor_critic, pad = ActorCritic(policy.model, head), policy.tokenizer.pad_token_id
    with torch.no_grad():
        per_turn = score_tokens(actor_critic, rollout.turns, 1.0, pad)
        packed = score_tokens(actor_critic, rollout.turns, 1.0, pad, packed=True)
    for a, b in zip(per_turn, packed): torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    kept = torch.zeros_like(per_turn[0])
    for k, t in enumerate(rollout.turns): kept[k, :len(t.token_logprobs)] = torch.tensor(t.token_logprobs)
    torch.testing.assert_close(kept, per_turn[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor([t.value for t in rollout.turns]), per_turn[2], atol=1e-5, rtol=0)


def test_another_generator_gets_one_packed_scoring_pass(policy, head):
    "A backend that answers observations (here a script): its turns are scored after the rollout, one forward per chain, as each alone."
    rollout = collect(policy, head, 'gp-l', steps=6, n_envs=2, seed=3, generator=scripted(right_on=2))
    assert [len(c) for c in chains(rollout.turns)] == [3, 3]        # re-encoded chats still extend each other here
    assert rollout.scored == _forwarded(rollout.turns, packed=True) and rollout.scored.total < _forwarded(rollout.turns).total
    alone = [remember(ActorCritic(policy.model, head), [Turn(t.prompt_ids, t.answer_ids, t.weights, None, 0.0, 0.0)], 0.2,
                      policy.tokenizer.pad_token_id)[0] for t in rollout.turns]
    for t, a in zip(rollout.turns, alone):
        assert abs(t.logprob - a.logprob) < 1e-5 and abs(t.value - a.value) < 1e-5
    again = [Turn(t.prompt_ids, t.answer_ids, t.weights, None, 0.0, 0.0, env=t.env, episode=t.episode) for t in rollout.turns]
    assert _remember_chains(ActorCritic(policy.model, head), again, 0.2, policy.tokenizer.pad_token_id, rows=1) == rollout.scored
    assert all(abs(a.logprob - t.logprob) < 1e-5 and abs(a.value - t.value) < 1e-5 for a, t in zip(again, rollout.turns))   # a chain a forward


def test_rescore_replaces_what_generation_read_by_one_packed_pass(policy, head):
    "`rescore` (train_rl under mixed precision): the same turns, scored after by one forward per chain; in float32 the same numbers."
    read, rescored = (collect(policy, head, 'gp-l', steps=6, n_envs=2, seed=5, temperature=1.0, max_new_tokens=8, rescore=r) for r in (False, True))
    assert [t.answer_ids for t in read.turns] == [t.answer_ids for t in rescored.turns]
    assert read.scored == TokenCount() and rescored.scored == _forwarded(rescored.turns, packed=True)
    for a, b in zip(read.turns, rescored.turns):
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)) < 1e-5 and abs(a.value - b.value) < 1e-5


def test_a_retry_continues_the_ids_and_a_new_chat_starts_afresh(policy):
    "`_continued`: the previous prompt and answer ids plus the template's ids for the reply; None when the next chat does not extend this one (V-IRL's next position, the episode's end)."
    from sftrl.rl import _continued
    tok = policy.tokenizer
    before = [{'role': 'user', 'content': 'Cards: 2 3 4 1'}]
    prompt = encode(policy, [{'messages': before}])['input_ids'][0].tolist()
    answer = sum((tok(c)['input_ids'] for c in '{"formula": "2+3"}'), []) + [tok.eos_token_id]   # one token a character: not the tokenizer's own split
    text = tok.decode(answer, skip_special_tokens=True)
    turn = Turn(prompt, answer, [1.0] * len(answer), None, 0.0, 0.0)
    after = before + [{'role': 'assistant', 'content': text}, {'role': 'user', 'content': 'You failed this trial.'}]
    ids, image = _continued(policy, before, after, turn, text)
    assert ids[:len(prompt) + len(answer)] == prompt + answer and image is None
    assert tok.decode(ids[len(prompt) + len(answer):]) == '<|user|>You failed this trial.<|assistant|>'
    assert ids != encode(policy, [{'messages': after}])['input_ids'][0].tolist()      # re-encoding the chat would not give the sampled ids
    truncated = Turn(prompt, answer[:-1], [1.0] * (len(answer) - 1), None, 0.0, 0.0)   # cut by max_new_tokens: the template closes it
    assert tok.decode(_continued(policy, before, after, truncated, text)[0][len(prompt) + len(answer) - 1:]).startswith('<|eos|><|user|>')
    assert _continued(policy, before, [{'role': 'user', 'content': 'Next position.'}], turn, text) is None


def test_a_model_without_a_final_norm_is_scored_after(policy, head, monkeypatch):
    "Where the values cannot be read while generating (no decoder norm to listen to), `collect` scores the turns after."
    monkeypatch.setattr(policy.model, 'get_decoder', lambda: object())
    rollout = collect(policy, head, 'gp-l', steps=4, n_envs=2, seed=1, temperature=1.0, max_new_tokens=6)
    assert rollout.scored.total > 0
    with torch.no_grad(): values = score_tokens(ActorCritic(policy.model, head), rollout.turns, 1.0, policy.tokenizer.pad_token_id)[2]
    torch.testing.assert_close(torch.tensor([t.value for t in rollout.turns]), values, atol=1e-5, rtol=0)


def test_the_generation_engine_plays_the_rollout_own_sampling_plays(policy, head):
    "`train_rl`'s CPU path (sftrl.generate.GenerationEngine, keys and values kept between tries, old numbers kept as it generates): the same turns as `collect`'s own sampling, the same old log-probabilities and values to 1e-5."
    from sftrl.generate import GenerationEngine
    own = collect(policy, head, 'gp-l', steps=12, n_envs=3, seed=6, temperature=1.0, max_new_tokens=10)
    engine = collect(policy, head, 'gp-l', steps=12, n_envs=3, seed=6, temperature=1.0, max_new_tokens=10, generator=GenerationEngine())
    assert [(t.prompt_ids, t.answer_ids, t.reward) for t in own.turns] == [(t.prompt_ids, t.answer_ids, t.reward) for t in engine.turns]
    assert engine.scored == TokenCount() and max(len(c) for c in chains(engine.turns)) > 1   # no scoring pass after
    for k, (a, b) in enumerate(zip(own.turns, engine.turns)):
        gap = max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs))
        assert gap < 1e-5 and abs(a.value - b.value) < 1e-5, (k, gap, a.answer_ids, [round(x - y, 6) for x, y in zip(a.token_logprobs, b.token_logprobs)])
    assert max(abs(x - y) for x, y in zip(own.last_values, engine.last_values)) < 1e-5


def test_the_turns_are_scored_after_when_asked_or_when_the_engine_rounds_otherwise(policy, head):
    "`rescore`, or an engine on bf16 weights (not the update's numbers), scores the turns after the rollout; a float32 engine's kept numbers are that pass's to 1e-5."
    from sftrl.generate import GenerationEngine
    kwargs = dict(steps=6, n_envs=2, seed=6, temperature=1.0, max_new_tokens=8)
    kept = collect(policy, head, 'gp-l', generator=GenerationEngine(), **kwargs)
    scored = collect(policy, head, 'gp-l', generator=GenerationEngine(), rescore=True, **kwargs)
    assert kept.scored == TokenCount() and scored.scored == _forwarded(scored.turns, packed=True)
    for a, b in zip(kept.turns, scored.turns):
        assert a.answer_ids == b.answer_ids and abs(a.value - b.value) < 1e-5
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)) < 1e-5
    rounded = collect(policy, head, 'gp-l', generator=GenerationEngine(precision='bf16'), **kwargs)
    assert rounded.scored == _forwarded(rounded.turns, packed=True)


def test_the_engine_plays_a_vision_rollout_as_own_sampling(tokenizer):
    "GP-VL through the engine (each image run once a chat, its token never generated): the turns `collect`'s own sampling plays, scored alike to 1e-4 (weights scaled up 4x: larger logits than the text test's)."
    from sftrl.generate import GenerationEngine
    from sftrl.rl import _rollout_generator
    policy = build_vision_policy(tokenizer, 'smoke', seed=0)
    with torch.no_grad():
        for p in policy.model.get_decoder().parameters(): p.mul_(4)   # varied answers
    head, kwargs = ValueHead(hidden_size(policy.model)), dict(steps=8, n_envs=2, seed=2, temperature=1.0, max_new_tokens=10, env_kwargs={'resolution': 64})
    engine = _rollout_generator(policy, 'transformers')
    assert isinstance(engine, GenerationEngine) and engine.banned == (policy.model.config.image_token_id,)
    own, played = collect(policy, head, 'gp-vl', **kwargs), collect(policy, head, 'gp-vl', generator=engine, **kwargs)
    assert [(t.prompt_ids, t.answer_ids, t.reward) for t in own.turns] == [(t.prompt_ids, t.answer_ids, t.reward) for t in played.turns]
    assert max(len(c) for c in chains(played.turns)) > 1 and engine.stats['reused'] > 0
    for a, b in zip(own.turns, played.turns):
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)) < 1e-4 and abs(a.value - b.value) < 1e-4
        assert torch.equal(a.pixel_values, b.pixel_values)


def test_the_episodes_of_a_group_sample_apart(policy, head):
    "A group's environments show the same chat, yet each samples its own answer: else every episode of a hand is the same and the group baseline is 0."
    rollout = collect(policy, head, 'gp-l', steps=4, n_envs=4, seed=0, temperature=1.0, max_new_tokens=8, group_size=2)
    first = {}
    for t in rollout.turns: first.setdefault(t.episode, t)
    by_hand = {}
    for t in first.values(): by_hand.setdefault(t.hand, []).append(t)
    assert len(by_hand) == 2 and all(len(ts) == 2 for ts in by_hand.values())
    for a, b in by_hand.values():
        assert a.prompt_ids == b.prompt_ids and a.answer_ids != b.answer_ids

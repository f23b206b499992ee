"""Rewards beyond the chapter: on every task, split and verifier mode, the score of a dataset row gives the
environment's own first-try verdict over a corpus of answers (the expert's, random mistakes, other positions'
answers, answer-shaped variations, malformed and hostile text, hypothesis-generated strings); the ground truth
alone recomputes the score in another process and after parquet and JSON lines; the rows are the evaluator's
episodes; the example files for verl, OpenRLHF and prime-rl/verifiers load as those engines load them and
score as the chapter's hooks do."""
import copy
import functools
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import datasets
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sftrl.cards import RANKS
from sftrl.evaluate import random_mistake_policy
from sftrl.nav import ABSOLUTE_DIRECTIONS, ANSWER_FIELDS, INTERSECTION_TEXT, RELATIVE_TURNS
from sftrl.points import MAX_ANSWER_CHARS
from sftrl.rewards import (compute_score, completion_text, episodes_dataset, expert_positions, ground_truth,
                           openrlhf_reward, score_answer, verdict, verifiers_reward)
from sftrl.tasks import (evaluation_seeds, expert_formula, get_task, make_env, oracle_answer, points_answer, start_episode,
                         training_seeds)

ROOT = Path(__file__).resolve().parents[1]
SMALL = {'gp-vl': {'resolution': 96}, 'virl-vl': {'resolution': 48}}
datasets.disable_progress_bars()

# (task, split, verifier mode or None for the default, episodes)
CONFIGS = [('gp-l', 'train', None, 10), ('gp-l', 'id', None, 10), ('gp-l', 'ood_rule', None, 10),
           ('gp-l', 'id', 'official', 8), ('gp-l', 'ood_rule', 'official', 8),
           ('gp-vl', 'id', None, 3), ('gp-vl', 'ood_rule', None, 3), ('gp-vl', 'ood_visual', None, 3),
           ('gp-vl', 'id', 'official', 3),
           ('virl-l', 'train', None, 1), ('virl-l', 'id', None, 2), ('virl-l', 'ood_rule', None, 2),
           ('virl-l', 'id', 'official', 1), ('virl-l', 'ood_rule', 'official', 1),
           ('virl-vl', 'ood_visual', None, 1)]


def _env_kwargs(task, mode):
    return {**SMALL.get(task, {}), **({'mode': mode} if mode else {})}


def _seeds(split, n):
    return training_seeds(0, n) if split == 'train' else evaluation_seeds(0, n)


def clone(env):
    "A copy of `env` to step, sharing what a step only reads (the route set, a V-IRL-VL city: megabytes to copy)."
    shared = [getattr(env, name, None) for name in ('routes', 'city')]
    return copy.deepcopy(env, memo={id(x): x for x in shared if x is not None})


@functools.cache
def positions(task, split, mode, n):
    "(env copy standing at the position, obs, info, ground truth as JSON) at every position of `n` episodes."
    env, out = make_env(task, split, **_env_kwargs(task, mode)), []
    for i, seed in enumerate(_seeds(split, n)):
        for obs, info in expert_positions(env, task, split, seed, i):
            out.append((clone(env), obs, info, json.dumps(ground_truth(env, task))))
    return tuple(out)


def first_try(env, answer: str):
    "The environment's verdict and reward on `answer` as the first try at its position (on a copy)."
    _, reward, _, _, info = clone(env).step(answer)
    return info['verdict'], reward


def assert_agree(env, truth: str, answer: str):
    "The row's score is the environment's first-try verdict; that verdict."
    expected, reward = first_try(env, answer)
    assert verdict(answer, truth) == expected, answer[:300]
    assert score_answer(answer, {'metadata': truth}) == reward == expected.reward
    return expected


# --- the corpus ----------------------------------------------------------------------------------------------------

HOSTILE = ['', ' ', 'None', 'null', '{}', '[]', '{', '}', '24', '"', '\x00', 'x' * (MAX_ANSWER_CHARS + 1),
           '{"formula": "__import__(\'os\').system(\'true\')=24"}', '{"formula": "2**100=24"}', '{"formula": "1/0=24"}',
           '{"formula": "(1-1)/(2-2)=24"}', '{"formula": "٣*٨=24"}', '{"formula": "0012+12=24"}',
           '{"formula": "' + '(' * 250 + '24' + ')' * 250 + '"}', '{"formula": "' + '9' * 5000 + '"}',
           '[' * 20000, '{"cards": ' + '[' * 5000, '{"cards": 5, "number": null, "formula": 24}',
           '{"cards": ["A"], "number": ["x"], "formula": ["1+2"]}', "{'cards': ['A'], 'formula': '1+1'}",
           '{"action": "forward()"', "{'action': 'stop()'}", '{"action": ["forward()"]}', '{"action": null}',
           '"current observation": "You observe an intersection", "action": "stop()"',
           'current instruction: 1. First, turn left\naction: forward()', 'transaction: forward()',
           '{"current observation": "' + 'intersection ' * 500 + '", "action": "' + 'x' * 3000 + '"}']


def variations(answer: str) -> list[str]:
    "Answer-shaped texts around an expert answer: prose, quotes, case, cuts, doubled."
    return ['Sure! Here it is:\n' + answer + '\nGood luck.', answer.replace('"', "'"), answer.upper(), answer.lower(),
            answer.replace('\n', ' '), answer[: len(answer) // 2], answer[: len(answer) * 3 // 4], answer + answer,
            answer.replace(', ', ','), answer.strip().rstrip('}').rstrip().rstrip(',') + '}']


def formulas(info) -> list[str]:
    "GeneralPoints answers whose formula leaves a number out, or stops halfway through the expert's."
    numbers, formula = info['numbers'], expert_formula(info['numbers'], info['target'])
    return [points_answer(info['cards'], numbers, f, info['target'])
            for f in ('+'.join(map(str, numbers[:3])), formula[: len(formula) // 2], formula + '+0')]


def corpus(task, obs, info, others: list[str]) -> list[str]:
    "The answers tried at one position."
    item = {'messages': info['messages'], 'info': info, **({'image': obs['image']} if 'image' in obs else {})}
    expert = oracle_answer(task, obs, info)
    mistakes = [random_mistake_policy(task, p=1.0, seed=s)([item])[0] for s in range(3)]
    specials = formulas(info) if get_task(task).env == 'points' else []
    return [expert, *mistakes, *specials, *variations(expert), *others, *HOSTILE]


STRIDE = {'virl-vl': 2}   # every other answer of the corpus: a correct V-IRL-VL answer renders the next views


@pytest.mark.parametrize('task,split,mode,n', CONFIGS)
def test_score_is_the_first_try_verdict_on_a_corpus(task, split, mode, n):
    seen, categories = [], set()
    for env, obs, info, truth in positions(task, split, mode, n):
        for answer in corpus(task, obs, info, seen[-3:])[::STRIDE.get(task, 1)]:
            categories.add(assert_agree(env, truth, answer).category)
        seen.append(oracle_answer(task, obs, info))
    wanted = {'CORRECT_SOLUTION', 'ILLEGAL_FORMULA', 'INCORRECT_NUMBER'} if get_task(task).env == 'points' \
        else {'CORRECT_ACTION', 'INCORRECT_ACTION', 'INCORRECT_OBS'}
    assert wanted <= categories, categories   # the corpus reaches the verdicts that matter


def test_answers_for_another_task_and_nav_answers_of_every_kind():
    "GeneralPoints answers at V-IRL positions and back; every action, observation and instruction at V-IRL positions."
    gp = positions('gp-l', 'id', None, 10)
    nav = positions('virl-l', 'ood_rule', None, 2)
    gp_answers = [oracle_answer('gp-l', obs, info) for _, obs, info, _ in gp[:3]]
    nav_answers = [oracle_answer('virl-l', obs, info) for _, obs, info, _ in nav[:3]]
    for env, _, _, truth in gp[:3]:
        for answer in nav_answers: assert_agree(env, truth, answer)
    actions = ['forward()', 'stop()', *(f'turn_direction({d})' for d in (*ABSOLUTE_DIRECTIONS, *RELATIVE_TURNS))]
    for env, obs, info, truth in nav:
        for answer in gp_answers: assert_agree(env, truth, answer)
        instructions = [info['current_instruction'], '1. ' + info['current_instruction'], 'Stop here.', '']
        for k, action in enumerate(actions):
            observation = [info['current_obs'], INTERSECTION_TEXT, 'No landmarks nearby; '][k % 3]
            fields = dict(zip(ANSWER_FIELDS, (observation, instructions[k % 4], action)))
            assert_agree(env, truth, json.dumps(fields))


# --- hypothesis ----------------------------------------------------------------------------------------------------

def _gp_answer(labels, numbers):
    "Answers in the GeneralPoints format with cards, numbers and formula drawn near the truth."
    token = st.sampled_from([*map(str, numbers), '+', '-', '*', '/', '(', ')', '10', '1', '0', ' '])
    formula = st.lists(token, max_size=14).map(''.join)
    cards = st.one_of(st.just(list(labels)), st.lists(st.sampled_from(RANKS), max_size=5))
    written = st.sampled_from(['official', 'json', 'bare'])
    def write(c, f, how):
        if how == 'official': return points_answer(c, numbers, f)
        if how == 'json': return json.dumps({'cards': c, 'number': numbers, 'formula': f + '=24'})
        return f'cards: {c}\nformula: {f}=24'
    return st.builds(write, cards, formula, written)


def _nav_answer(info):
    "Answers in the V-IRL format with fields drawn near the truth, or free text."
    action = st.one_of(st.sampled_from([info['gt_action'], 'forward()', 'stop()', 'turn_direction(left)',
                                        'turn_direction(north)']), st.text(max_size=20))
    observation = st.one_of(st.sampled_from([info['current_obs'], INTERSECTION_TEXT, '']), st.text(max_size=30))
    instruction = st.one_of(st.just(info['current_instruction']), st.text(max_size=30))
    as_json = st.builds(lambda o, i, a: json.dumps(dict(zip(ANSWER_FIELDS, (o, i, a)))), observation, instruction, action)
    as_lines = st.builds(lambda o, i, a: f'current observation: {o}\ncurrent instruction: {i}\naction: {a}',
                         observation, instruction, action)
    return st.one_of(as_json, as_lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_answers_score_as_the_environment_judges(data):
    task, split, mode, n = data.draw(st.sampled_from([('gp-l', 'id', None, 10), ('gp-l', 'ood_rule', 'official', 8),
                                                      ('gp-vl', 'id', None, 3), ('virl-l', 'id', None, 2),
                                                      ('virl-l', 'ood_rule', 'official', 1)]))
    env, obs, info, truth = data.draw(st.sampled_from(positions(task, split, mode, n)))
    structured = _gp_answer(info['cards'], info['numbers']) if get_task(task).env == 'points' else _nav_answer(info)
    answer = data.draw(st.one_of(st.text(max_size=200), structured))
    assert_agree(env, truth, answer)


# --- the ground truth travels --------------------------------------------------------------------------------------

_SCORER = """
import json, sys
from sftrl.rewards import score_answer
cases = json.load(sys.stdin)
scores = [score_answer(answer, {'metadata': truth}) for answer, truth in cases]
print(json.dumps({'scores': scores, 'loaded': [m for m in ('torch', 'datasets') if m in sys.modules]}))
"""


def test_the_ground_truth_alone_scores_in_another_process_without_torch():
    cases = []
    for task, split, mode, n in [('gp-l', 'ood_rule', None, 10), ('gp-vl', 'ood_visual', None, 3),
                                 ('virl-l', 'ood_rule', 'official', 1), ('virl-vl', 'ood_visual', None, 1)]:
        seen = []
        for env, obs, info, truth in positions(task, split, mode, n)[:4]:
            cases += [(answer, truth) for answer in corpus(task, obs, info, seen[-1:])[:8]]
            seen.append(oracle_answer(task, obs, info))
    here = [score_answer(answer, {'metadata': truth}) for answer, truth in cases]
    done = subprocess.run([sys.executable, '-c', _SCORER], input=json.dumps(cases), capture_output=True, text=True,
                          check=True, timeout=120)
    assert json.loads(done.stdout) == {'scores': here, 'loaded': []}   # scoring alone loads neither torch nor datasets
    assert len(set(here)) >= 5


def test_rows_are_the_evaluators_episodes():
    for task in ('gp-l', 'gp-vl', 'virl-l', 'virl-vl'):
        split = 'ood_visual' if get_task(task).vision else 'ood_rule'
        rows = episodes_dataset(task, split, 2 if task != 'virl-vl' else 1, seed=5, **SMALL.get(task, {}))
        env = make_env(task, split, **SMALL.get(task, {}))
        for index, seed in enumerate(evaluation_seeds(5, 2 if task != 'virl-vl' else 1)):
            episode = rows.filter(lambda r: r['index'] == index)
            obs, info = start_episode(env, task, split, seed, index)
            assert episode[0]['prompt'] == info['messages'] and set(episode['seed']) == {seed}
            assert episode['position'] == list(range(info.get('rail_length', 1)))
            if get_task(task).vision: assert np.array_equal(np.asarray(episode[0]['images'][0]), obs['image'])
            assert [score_answer(r['answer'], r) for r in episode] == [first_try(env, oracle_answer(task, obs, info))[1]] * len(episode)
    assert set(episodes_dataset('virl-l', 'train', 1, seed=5)['seed']) == set(training_seeds(5, 1))


def test_the_same_seed_gives_the_same_rows():
    a, b = (episodes_dataset('gp-l', 'id', 5, seed=2).to_list() for _ in range(2))
    assert a == b
    assert a != episodes_dataset('gp-l', 'id', 5, seed=3).to_list()


def test_hostile_entries_are_refused_with_a_reason():
    truth = positions('gp-l', 'id', None, 10)[0][3]
    with pytest.raises(TypeError, match='str'): verdict(b'answer', truth)
    with pytest.raises(TypeError, match='str'): score_answer(['answer'], {'metadata': truth})
    with pytest.raises(ValueError, match="'task'"): verdict('x', '{"cards": ["A"]}')
    with pytest.raises(ValueError, match='must be one of'): verdict('x', '{"task": "chess"}')
    with pytest.raises(ValueError, match=r"lacks \['absolute_action', 'mode'\]"): verdict('x', {'task': 'virl-l', 'point': {}})
    with pytest.raises(ValueError, match="'metadata'"): score_answer('x', 'not an entry')
    with pytest.raises(json.JSONDecodeError): verdict('x', '{"task": ')
    assert score_answer(None, {'metadata': truth}) == score_answer('', {'metadata': truth}) == -3.0


# --- the engines' files --------------------------------------------------------------------------------------------

def load_example(name: str):
    "An example file loaded as verl and OpenRLHF load a reward file: by path, not as a package."
    spec = importlib.util.spec_from_file_location(f'example_{name}', ROOT / 'examples' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verl_file_scores_and_writes_verl_parquet(tmp_path):
    verl = load_example('verl_reward')
    out = verl.main(['--task', 'virl-l', '--split', 'id', '--n', '1', '--out', str(tmp_path / 'id.parquet')])
    rows = datasets.Dataset.from_parquet(out)
    assert rows.column_names == ['data_source', 'prompt', 'ability', 'reward_model', 'extra_info']
    assert [r['extra_info']['index'] for r in rows] == list(range(len(rows))) and len(rows) > 3
    truths = [r['reward_model']['ground_truth'] for r in rows]
    answers = episodes_dataset('virl-l', 'id', 1)['answer']
    scores = [verl.compute_score(data_source=r['data_source'], solution_str=a, ground_truth=t, extra_info=r['extra_info'])
              for r, a, t in zip(rows, answers, truths)]
    assert scores == [1.0] * len(rows)
    assert verl.compute_score('sftrl/virl-l', answers[1], truths[0]) == score_answer(answers[1], {'metadata': truths[0]})
    with pytest.raises(ValueError, match='not an sftrl task'): verl.compute_score('lighteval/MATH', '42', truths[0])


def test_verl_file_writes_images_for_vision_tasks(tmp_path):
    verl = load_example('verl_reward')
    out = verl.main(['--task', 'gp-vl', '--split', 'ood_visual', '--n', '2', '--out', str(tmp_path / 'vl.parquet')])
    rows, source = datasets.Dataset.from_parquet(out), episodes_dataset('gp-vl', 'ood_visual', 2)
    for row, original in zip(rows, source):
        assert row['prompt'][0]['content'] == '<image>' + original['question']
        assert np.array_equal(np.asarray(row['images'][0]), np.asarray(original['images'][0]))
        assert verl.compute_score(row['data_source'], original['answer'], row['reward_model']['ground_truth']) == 5.0


def test_openrlhf_file_scores_batches_from_its_prompt_data(tmp_path):
    openrlhf = load_example('openrlhf_reward')
    out = openrlhf.main(['--task', 'gp-l', '--split', 'ood_rule', '--n', '4', '--out', str(tmp_path / 'p.jsonl')])
    lines = [json.loads(line) for line in Path(out).read_text().splitlines()]
    assert len(lines) == 4 and all(isinstance(line['prompt'], list) and isinstance(line['metadata'], str) for line in lines)
    prompts = ['<|im_start|>user\n' + line['prompt'][0]['content'] + '<|im_end|>\n<|im_start|>assistant\n' for line in lines]
    responses = [lines[0]['answer'], lines[1]['answer'] + '<|im_end|>', 'no idea', lines[0]['answer']]
    labels = [line['metadata'] for line in lines]
    out = openrlhf.reward_func([p + r for p, r in zip(prompts, responses)], prompts, labels)
    expected = [score_answer(r, {'metadata': t}) for r, t in zip(responses, labels)]
    assert out['rewards'].tolist() == expected and expected[:2] == [5.0, 5.0]
    assert out['scores'].tolist() == [1.0, 1.0, 0.0, 0.0] == out['extra_logs']['sftrl_correct'].tolist()
    with pytest.raises(ValueError, match='does not start'): openrlhf.reward_func(['x'], prompts[:1], labels[:1])
    with pytest.raises(SystemExit): openrlhf.main(['--task', 'gp-vl', '--out', str(tmp_path / 'vl.jsonl')])


def _fake_verifiers():
    "A stand-in for the verifiers package that records what the environment is built from."
    fake = types.ModuleType('verifiers')
    fake.Rubric = lambda funcs, weights: types.SimpleNamespace(funcs=funcs, weights=weights)
    fake.SingleTurnEnv = lambda dataset, rubric: types.SimpleNamespace(dataset=dataset, rubric=rubric)
    return fake


def test_verifiers_file_builds_a_single_turn_environment(monkeypatch):
    module = load_example('verifiers_env')
    monkeypatch.setitem(sys.modules, 'verifiers', _fake_verifiers())
    env = module.load_environment('virl-l', 'ood_rule', n=1)
    assert env.dataset.column_names == ['prompt', 'answer', 'info'] and env.rubric.funcs == [verifiers_reward]
    assert env.rubric.weights == [1.0]
    for row in env.dataset:
        chat = row['prompt'] + [{'role': 'assistant', 'content': row['answer']}]
        assert env.rubric.funcs[0](completion=chat, info=json.loads(row['info']), answer=row['answer']) == 1.0
        assert verifiers_reward(completion=row['answer'], info=row['info']) == 1.0
    with pytest.raises(ValueError, match='vision task'): module.load_environment('gp-vl', 'id', n=1, resolution=96)


def test_verifiers_file_needs_verifiers_only_when_called(monkeypatch):
    monkeypatch.setitem(sys.modules, 'verifiers', None)   # as if not installed
    module = load_example('verifiers_env')
    with pytest.raises(ImportError): module.load_environment('gp-l', 'id', n=1)


def test_completion_text_reads_text_and_chats():
    assert completion_text('plain') == 'plain'
    chat = [{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': 'first'},
            {'role': 'assistant', 'content': [{'type': 'text', 'text': 'a'}, {'type': 'image'}, {'type': 'text', 'text': 'b'}]}]
    assert completion_text(chat) == 'ab'
    assert completion_text([{'role': 'user', 'content': 'q'}]) == completion_text(None) == ''
    assert completion_text([{'role': 'assistant', 'content': None}]) == ''

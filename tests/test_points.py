"""GeneralPoints verifier and env beyond the chapter: hostile and generated answers (never raise, stay fast),
every solver solution scores CORRECT, official float arithmetic equals Python's, seeded envs reproduce, splits
follow their rules."""
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftrl.cards import ID_RULE, OOD_RULE, RANKS, SUIT_SETS, Card, deal_hand, solve
from sftrl.core import Verdict
from sftrl.points import (MAX_ANSWER_CHARS, MODES, REWARDS, GeneralPointsEnv, category_of, formula_value, grammar_errors,
                          parse_answer, tokenize, verify)

HAND = [Card('3', 'S'), Card('8', 'H'), Card('A', 'D'), Card('A', 'C')]   # numbers [3, 8, 1, 1]
CATEGORIES = set(REWARDS) | {'AGGREGATED_ERROR'}
TIME_BOUND = 0.050   # seconds per verdict for generated answers


def _answer(formula, cards="['3', '8', 'A', 'A']", numbers='[3, 8, 1, 1]'):
    return f'{{"cards": {cards}, "number": {numbers}, "formula": "{formula}",}}'


def _judge(text, hand=HAND, **kw):
    "Verdicts in every mode and modality, with the slowest time (best of 3 tries, to ignore scheduler noise)."
    worst = 0.0
    for mode in MODES:
        for vision in (False, True):
            best = float('inf')
            for _ in range(3):
                start = time.perf_counter()
                verdict = verify(text, hand, vision=vision, mode=mode, **kw)
                best = min(best, time.perf_counter() - start)
                if best < TIME_BOUND: break
            assert isinstance(verdict, Verdict)
            assert verdict.category in CATEGORIES
            assert verdict.category == category_of(verdict.reward)
            assert verdict.feedback.endswith('.') or verdict.category == 'INCORRECT_VISION'
            worst = max(worst, best)
    return worst


# --- generated answers -------------------------------------------------------------------------------------

_PIECES = st.sampled_from(list('0123456789+-*/()= ') + ['10', '13', '08', '٣', '２４', 'x', '**', '\n', '"', "'", 'NaN'])
_FORMULAS = st.lists(_PIECES, max_size=40).map(''.join)
_CARDS = st.one_of(st.lists(st.sampled_from(RANKS + ('T', 'k', '1', '')), max_size=6).map(repr),
                   st.lists(st.integers(-5, 20), max_size=6).map(repr), st.text(max_size=20))


@st.composite
def _near_answers(draw):
    formula, cards = draw(_FORMULAS), draw(_CARDS)
    shape = draw(st.integers(0, 5))
    if shape == 0: text = _answer(formula, cards)
    elif shape == 1: text = f'{{"cards": {cards}, "formula": {formula!r}}}'
    elif shape == 2: text = f'{{"formula":"{formula}"}}'
    elif shape == 3: text = draw(st.text(max_size=30)) + _answer(formula, cards) + draw(st.text(max_size=30))
    elif shape == 4: text = '{"cards": ' + cards + ', "formula": ' + draw(st.sampled_from(['24', 'null', 'NaN', '[1]', '{}'])) + '}'
    else: text = _answer('(' * draw(st.integers(0, 300)) + formula + ')' * draw(st.integers(0, 300)), cards)
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=2000))
def test_any_text_gets_a_verdict_fast(text):
    assert _judge(text) < TIME_BOUND


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_near_answers())
def test_near_answers_get_a_verdict_fast(text):
    assert _judge(text) < TIME_BOUND


@settings(max_examples=300, deadline=None)
@given(_FORMULAS)
def test_exact_and_official_agree_on_clean_formulas(formula):
    "Where no quirk applies (ASCII, no spaces, complete, no leading zeros), both modes give the same verdict."
    tokens = tokenize(formula, 'exact')
    quirky = (tokens is None or any(c.isspace() for c in formula) or '=' in formula or grammar_errors(tokens, 'exact')
              or any(t[0] == '0' and len(t) > 1 for t in tokens))
    if quirky: return
    official, exact = (verify(_answer(formula), HAND, mode=m) for m in MODES)
    if exact.correct != official.correct:   # float rounding: the one intended difference
        assert float(formula_value(formula)) == pytest.approx(formula_value(formula, 'official'))
        return
    assert (official.reward, official.feedback) == (exact.reward, exact.feedback)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list('123456789+-*/()') + ['10', '13']), min_size=1, max_size=15).map(''.join))
def test_official_value_is_pythons_eval(formula):
    "Official mode computes with Python's own int/float operators in eval's order: the very same float."
    value = formula_value(formula, 'official')
    if value is None: return
    expected = eval(compile(formula, '<formula>', 'eval'), {'__builtins__': {}})   # digits, + - * / ( ) only; grammar-checked
    assert type(value) is type(expected) and value == expected


# --- hostile corpus ----------------------------------------------------------------------------------------

_NESTED = '(' * 10_000 + '3*8*1*1' + ')' * 10_000
HOSTILE = {
    'megabytes': '9' * 3_000_000,
    'megabytes of json': '{"formula": "' + '1+' * 1_000_000 + '1"}',
    '10k nested parens': _answer(_NESTED),
    '10k nested parens, in bound': _answer('(' * 8000 + '3*8*1*1' + ')' * 8000),
    '10k open parens': _answer('(' * 10_000),
    'power tower': _answer('2**99**99'),
    'import': _answer("__import__('os').system('rm -rf /')"),
    'dunder': '{"formula": "().__class__.__bases__[0].__subclasses__()"}',
    'nan': '{"formula": NaN, "cards": NaN}',
    'inf': '{"formula": Infinity}',
    'null': '{"formula": null}',
    'list formula': '{"formula": [[[[1]]]]}',
    'fullwidth digits': _answer('２４'),
    'arabic-indic digits': _answer('٣*8*1*1'),
    'mixed digits': _answer('٣*８*1*1'),
    'division by zero': _answer('8/(1-1)*3'),
    'zero over zero': _answer('(1-1)/(1-1)+3*8'),
    'huge integer': _answer('1' + '0' * 5000),
    'huge integer in bound': _answer('9' * (MAX_ANSWER_CHARS - 100)),
    'huge int in json': '{"formula": "1", "cards": [' + '1' * 5000 + ']}',
    'leading zeros': _answer('0' * 10_000 + '3*8*1*1'),
    'deep json': '[' * 100_000 + ']' * 100_000,
    'deep json in bound': '[' * (MAX_ANSWER_CHARS // 2) + ']' * (MAX_ANSWER_CHARS // 2),
    'many cards keys': '"cards": [' * (MAX_ANSWER_CHARS // 10),
    'many formula keys': '"formula": "' * (MAX_ANSWER_CHARS // 12),
    'many single-quoted keys': "'formula': '" * (MAX_ANSWER_CHARS // 12),
    'operators only': _answer('+' * (MAX_ANSWER_CHARS - 100)),
    'control characters': _answer('\x00\x1b[31m\u202e3*8*1*1'),
    'surrogates': _answer('\ud800\udfff'),
    'empty': '',
    'whitespace': ' \n\t' * 1000,
}


@pytest.mark.parametrize('name', list(HOSTILE))
def test_hostile_answers(name):
    text = HOSTILE[name]
    start = time.perf_counter()
    _judge(text)
    assert time.perf_counter() - start < 1.0   # all four verdicts, best-of-3 each at worst


@pytest.mark.parametrize('name', ['megabytes', '10k nested parens, in bound', 'operators only', 'deep json in bound'])
def test_hostile_answers_use_bounded_memory(name):
    text = HOSTILE[name]
    tracemalloc.start()
    try:
        for mode in MODES: verify(text, HAND, vision=True, mode=mode)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * MAX_ANSWER_CHARS + 2_000_000, peak


def test_overlong_answers_are_refused():
    for mode in MODES:
        v = verify(_answer('3*8*1*1') + ' ' * MAX_ANSWER_CHARS, HAND, mode=mode)
        assert (v.reward, v.feedback) == (-3.0, 'your answer is too long.')


def test_parse_answer_never_raises_on_hostile_text():
    for text in HOSTILE.values():
        for mode in MODES: parse_answer(text, mode)


# --- solver solutions are correct ---------------------------------------------------------------------------

@pytest.mark.parametrize('rule,face_card', [(ID_RULE, False), (OOD_RULE, True)])
def test_every_solver_solution_is_correct(rule, face_card):
    rng = np.random.default_rng(0)
    for _ in range(40):
        hand = deal_hand(rng, rule, face_card=face_card)
        labels = [c.rank for c in hand]
        for solution in solve(rule.values(hand)):
            text = _answer(solution + '=24', cards=str(labels))
            assert verify(text, hand, rule, vision=True).correct, solution
            official = verify(text, hand, rule, vision=True, mode='official')
            if formula_value(solution, 'official') == 24: assert official.correct, solution
            else: assert (official.reward, official.feedback) == (0.0, '.')   # float rounding, e.g. 8/(3-8/3)


# --- the environment ----------------------------------------------------------------------------------------

def test_same_seed_same_hand_and_image():
    a, b = (GeneralPointsEnv.for_split('id', vision=True, resolution=96) for _ in range(2))
    for seed in range(5):
        (oa, ia), (ob, ib) = a.reset(seed=seed), b.reset(seed=seed)
        assert ia['cards'] == ib['cards'] and ia['suits'] == ib['suits']
        assert oa['text'] == ob['text'] and oa['image'].tobytes() == ob['image'].tobytes()
    hands = {tuple(a.reset(seed=s)[1]['cards']) for s in range(20)}
    assert len(hands) > 10


@pytest.mark.parametrize('split,vision,suits,rule,face', [
    ('id', False, 'mixed', ID_RULE, False), ('ood_rule', False, 'mixed', OOD_RULE, True),
    ('id', True, 'black', ID_RULE, False), ('ood_rule', True, 'black', OOD_RULE, True),
    ('ood_visual', True, 'red', ID_RULE, False)])
def test_splits_follow_their_rules(split, vision, suits, rule, face):
    env = GeneralPointsEnv.for_split(split, vision=vision, resolution=64)
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        assert set(info['suits']) <= set(SUIT_SETS[suits])
        assert info['numbers'] == rule.values(info['cards'])
        assert formula_value(info['solution']) == 24
        if face: assert any(label in 'JQK' for label in info['cards'])
        assert ("'11', '12', and '13' respectively" in obs['text']) == (rule == OOD_RULE)
        assert ('image' in obs) == vision


def test_episode_budget_and_termination():
    env = GeneralPointsEnv.for_split('id')
    obs, info = env.reset(seed=0)
    for tries_left in range(4, -1, -1):
        obs, reward, terminated, truncated, info = env.step('no answer')
        assert (reward, terminated, truncated, info['tries_left']) == (-3.0, False, False, tries_left)
    obs, reward, terminated, truncated, info = env.step(_answer(info['solution'], str(info['cards'])))
    assert (reward, terminated, truncated, info['category']) == (-1.0, False, True, 'STEP_LIMIT_REACHED')
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(_answer(info['solution'], str(info['cards'])))
    assert (reward, terminated, truncated) == (5.0, True, False)


def test_reset_with_given_cards():
    env = GeneralPointsEnv(mode='official')
    obs, info = env.reset(seed=0, options={'cards': HAND})
    assert info['cards'] == ['3', '8', 'A', 'A'] and "Cards: ['3', '8', 'A', 'A']" in obs['text']
    with pytest.raises(ValueError, match='4 Card objects'):
        env.reset(options={'cards': ['3', '8', 'A', 'A']})


def test_many_envs_are_cheap():
    envs = [GeneralPointsEnv.for_split('id') for _ in range(64)]
    start = time.perf_counter()
    for i, env in enumerate(envs):
        obs, info = env.reset(seed=i)
        assert env.step(_answer(info['solution'], str(info['cards'])))[1] == 5.0
    assert time.perf_counter() - start < 2.0


# --- bounded feedback ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('mode', MODES)
def test_feedback_in_the_next_prompt_is_bounded(mode):
    "One garbage answer at the cap never turns the next user turn into a long prompt (official keeps its text in the verdict)."
    from sftrl.core import FEEDBACK_PREFIX, MAX_FEEDBACK_CHARS
    env = GeneralPointsEnv.for_split('id', mode=mode)
    env.reset(seed=0)
    for formula in (')' * 16_000, '(' * 16_000, '1 ' * 8000, '+'.join(map(str, range(10**6, 10**6 + 2000)))):
        _, reward, _, _, info = env.step(_answer(formula))
        assert info['messages'][-1]['role'] == 'user'
        assert len(info['messages'][-1]['content']) <= len(FEEDBACK_PREFIX) + MAX_FEEDBACK_CHARS
        verdict = info['verdict']
        assert mode == 'official' or len(verdict.feedback) <= MAX_FEEDBACK_CHARS
        env.reset(seed=0)

"""Hostile answers, generated: both verifiers (GeneralPoints, V-IRL), both modes. Whatever a model writes, the verdict
comes back without an exception, lies in the reward table, keeps its feedback within the cap that enters the next
prompt, and says CORRECT only when it is: for GeneralPoints an exact rational evaluator written here (fractions, a
small recursive parser, never `eval`) must agree that the formula uses exactly the hand's numbers and makes 24."""
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftrl.cards import ID_RULE, OOD_RULE, deal_hand, solve
from sftrl.core import FEEDBACK_PREFIX, MAX_ANSWER_CHARS, MAX_FEEDBACK_CHARS, Verdict
from sftrl.nav import INTERSECTION_TEXT, MODES as NAV_MODES, REWARD_FN_VIRL, NavigationEnv, verify_step
from sftrl.points import MODES as GP_MODES, REWARDS, category_of, parse_answer, verify

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- an exact evaluator of formulas, independent of sftrl.points ----------------------------------------------

_TOKEN = re.compile(r'\s*([0-9]+|[-+*/()])')


def _tokens(formula: str) -> list[str] | None:
    "ASCII numbers, the four operators and parentheses, whitespace between; None for any other character."
    out, pos, rest = [], 0, formula.rstrip()
    while pos < len(rest):
        match = _TOKEN.match(rest, pos)
        if match is None: return None
        out.append(match.group(1))
        pos = match.end()
    return out


def exact_value(formula: str) -> tuple[Fraction, list[int]] | None:
    "(value, numbers used) of an arithmetic formula by recursive descent with Fractions; None if it is not one."
    tokens = _tokens(formula)
    if not tokens or len(tokens) > 2000: return None
    numbers, pos = [], 0

    def peek(): return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def factor():
        if peek() is None: raise ValueError
        token = take()
        if token == '(':
            value = expression()
            if peek() != ')': raise ValueError
            take()
            return value
        if not token.isdigit(): raise ValueError
        numbers.append(int(token))
        return Fraction(int(token))

    def term():
        value = factor()
        while peek() in ('*', '/'):
            op, right = take(), factor()
            value = value * right if op == '*' else value / right
        return value

    def expression():
        value = term()
        while peek() in ('+', '-'):
            op, right = take(), term()
            value = value + right if op == '+' else value - right
        return value

    try:
        value = expression()
    except (ValueError, ZeroDivisionError, RecursionError):
        return None
    return (value, numbers) if pos == len(tokens) else None


def test_the_evaluator_itself():
    assert exact_value('8/(3-8/3)') == (Fraction(24), [8, 3, 8, 3])
    assert exact_value('(1 + 6) * 3 + 13') == (Fraction(34), [1, 6, 3, 13])
    assert exact_value('1/(2-2)') is None and exact_value('(1+2') is None and exact_value('1+') is None
    assert exact_value('2**3') is None and exact_value('٣*8') is None and exact_value('1 2') is None
    assert exact_value('08*3') == (Fraction(24), [8, 3])


# --- GeneralPoints ---------------------------------------------------------------------------------------------

HANDS = [(hand, rule) for seed in range(12) for rule in (ID_RULE, OOD_RULE)
         for hand in [deal_hand(np.random.default_rng(seed), rule, face_card=rule is OOD_RULE)]]


@st.composite
def formulas(draw, numbers):
    "A solution decorated (spaces, parentheses, leading zeros, '=24'), a near miss, or token soup."
    solutions = solve(numbers)
    kind, sometimes = draw(st.integers(0, 4)), st.integers(0, 3).map(lambda k: k == 0)
    if kind <= 1 and solutions:
        formula = draw(st.sampled_from(solutions))
        if draw(sometimes): formula = formula.replace('*', ' * ').replace('+', ' + ')
        if draw(sometimes): depth = draw(st.integers(0, 250)); formula = '(' * depth + formula + ')' * depth
        if draw(sometimes): formula = re.sub(r'\d+', lambda m: '0' + m.group(), formula, count=1)
        return formula + draw(st.sampled_from(['', '', '=24', '=24', ' = 24', '=25', '**', ')', '(']))
    if kind == 2:
        pieces = [str(n) for n in numbers] + list('+-*/()') + [' ', '=', '24']
        return ''.join(draw(st.lists(st.sampled_from(pieces), max_size=20)))
    pieces = [str(n) for n in numbers] + list('+-*/() ') + ['**', '٣', '２４', '0', '00', '\ud800', '\x00', 'NaN', 'e9',
                                                            '9' * 40, '(' * 300, ')' * 300, '"', "'", '\\', '{', '[']
    return ''.join(draw(st.lists(st.sampled_from(pieces), max_size=30)))


@st.composite
def gp_answers(draw):
    "(text, hand, rule): the formula in the shapes models write, beside hostile wrappers, up to and over the cap."
    hand, rule = draw(st.sampled_from(HANDS))
    labels = [c.rank for c in hand]
    formula = draw(formulas(rule.values(hand)))
    cards = draw(st.sampled_from([repr(labels), str(labels).replace("'", '"'), str(rule.values(hand)), '[]', 'NaN']))
    quoted = formula.replace('\\', '\\\\').replace('"', '\\"')
    shape = draw(st.integers(0, 7))
    if shape == 0: text = f'{{"cards": {cards}, "number": {rule.values(hand)}, "formula": "{formula}",}}'
    elif shape == 1: text = f'{{"cards": {cards}, "formula": "{quoted}"}}'
    elif shape == 2: text = f"{{'cards': {cards}, 'formula': '{formula}'}}"
    elif shape == 3: text = draw(st.text(max_size=40)) + f'"formula": "{formula}"' + draw(st.text(max_size=40))
    elif shape == 4: text = '{' + f'"formula": "1+1", ' * draw(st.integers(1, 50)) + f'"formula": "{quoted}"}}'   # duplicate keys
    elif shape == 5: text = f'{{"formula": {draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "null", "[[1]]", "1e999", "9" * 5000]))}}}'
    elif shape == 6: text = draw(st.sampled_from(['(', ')', '[', '{', '"', '٣', '9', '+', ' ', '\ud800'])) * draw(
        st.sampled_from([1, 100, MAX_ANSWER_CHARS - 1, MAX_ANSWER_CHARS, MAX_ANSWER_CHARS + 1]))
    else: text = draw(st.text(max_size=200))
    return text, hand, rule


def _check_gp(verdict: Verdict, text: str, hand, rule, mode: str):
    assert isinstance(verdict, Verdict)
    # the reward table: a named reward is the table's, any other is a sum of -3 and -2 penalties
    assert verdict.category == category_of(verdict.reward)
    if verdict.category not in REWARDS:   # a sum: some -3 grammar penalties and at most two -2 number penalties, or 0
        assert any(-verdict.reward - 2 * b >= 0 and (-verdict.reward - 2 * b) % 3 == 0 for b in range(3)), verdict
    # the feedback: bounded in the verdict (exact) and always in the next prompt
    assert len(verdict.revision_prompt()) <= len(FEEDBACK_PREFIX) + MAX_FEEDBACK_CHARS
    if mode == 'exact': assert len(verdict.feedback) <= MAX_FEEDBACK_CHARS
    # CORRECT only when it is
    assert verdict.correct == (verdict.category == 'CORRECT_SOLUTION')
    if verdict.correct:
        formula = parse_answer(text, mode).formula
        found = exact_value(formula)
        assert found is not None, formula
        value, numbers = found
        assert value == 24 and sorted(numbers) == sorted(rule.values(hand)), formula


@SETTINGS
@given(gp_answers(), st.sampled_from(GP_MODES), st.booleans())
def test_generalpoints_verdicts_on_hostile_answers(answer, mode, vision):
    text, hand, rule = answer
    _check_gp(verify(text, hand, rule, vision=vision, mode=mode), text, hand, rule, mode)


@pytest.mark.parametrize('mode', GP_MODES)
def test_generated_answers_do_reach_correct(mode):
    "The strategy above is not vacuous: decorated solutions score CORRECT in both modes, and the evaluator agrees."
    hand, rule = HANDS[0]
    solution = solve(rule.values(hand))[0]
    for formula in (solution, '(' * 190 + solution + ')' * 190):
        text = f'{{"cards": {[c.rank for c in hand]!r}, "formula": "{formula}=24",}}'
        verdict = verify(text, hand, rule, mode=mode)
        assert verdict.correct
        _check_gp(verdict, text, hand, rule, mode)


# --- V-IRL -----------------------------------------------------------------------------------------------------

_ENV = NavigationEnv.for_split('train', n_routes=3)
_ENV.reset(seed=0, options={'route_idx': 1})
POINTS = [_ENV.task.rail[0], next(p for p in _ENV.task.rail if p.intersection), _ENV.task.rail[-1]]
_VALUES = ['forward()', 'stop()', 'turn_direction(north)', 'turn_direction(left)', INTERSECTION_TEXT, 'intersection',
           'None', '', POINTS[1].instruction]


@st.composite
def nav_answers(draw):
    "Answers whose fields are strings, lists, objects, numbers, NaN, null, huge, or missing; hostile text."
    json_values = st.one_of(st.sampled_from(_VALUES).map(lambda v: f'"{v}"'),
                            st.lists(st.sampled_from(_VALUES), max_size=3).map(lambda vs: '[' + ', '.join(f'"{v}"' for v in vs) + ']'),
                            st.sampled_from(_VALUES).map(lambda v: f'{{"{v}": 1}}'),
                            st.sampled_from(['3', '-1.5', 'NaN', 'Infinity', 'null', 'true', '"\\ud800"', '9' * 5000, '[' * 3000 + ']' * 3000]))
    shape = draw(st.integers(0, 3))
    if shape == 0:
        keys = draw(st.lists(st.sampled_from(['current observation', 'current instruction', 'action']), max_size=5))
        body = ', '.join(f'"{k}": {draw(json_values)}' for k in keys)
        return draw(st.sampled_from(['', 'Sure! '])) + '{' + body + draw(st.sampled_from(['', ','])) + '}'
    if shape == 1:
        return draw(st.text(max_size=40)) + f'"action": "{draw(st.sampled_from(_VALUES))}"' + draw(st.text(max_size=40))
    if shape == 2:
        return draw(st.sampled_from(['{', '[', '"', 'intersection ', '"action": "', 'x'])) * draw(
            st.sampled_from([1, 1000, MAX_ANSWER_CHARS // 11, MAX_ANSWER_CHARS + 1]))
    return draw(st.text(max_size=200))


@SETTINGS
@given(nav_answers(), st.sampled_from(POINTS), st.sampled_from(NAV_MODES), st.booleans())
def test_virl_verdicts_on_hostile_answers(text, point, mode, absolute):
    verdict = verify_step(text, point, absolute_action=absolute, mode=mode)
    assert isinstance(verdict, Verdict) and verdict.reward == REWARD_FN_VIRL[verdict.category]
    assert verdict.correct == (verdict.category == 'CORRECT_ACTION')
    assert len(verdict.feedback) <= MAX_FEEDBACK_CHARS
    assert len(verdict.revision_prompt()) <= len(FEEDBACK_PREFIX) + MAX_FEEDBACK_CHARS
    if verdict.correct: assert point.action(absolute) in text and len(text) <= MAX_ANSWER_CHARS

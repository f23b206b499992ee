"""V-IRL navigation beyond the chapter: the oracle always succeeds (every split, both action spaces, both modes,
text and vision), ground truth agrees with the city's geometry, wrong and hostile answers get the right verdicts
and never raise (hypothesis, megabyte inputs), seeds reproduce cities, routes and image bytes, the official-format
loader round-trips, splits cannot leak, and the gymnasium id works."""
import json
import re
import time
import tracemalloc
import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftrl.city import (HELD_OUT_STYLES, HOME_STYLE, RouteSet, bearing, compass_direction, geocode_distance, make_city,
                        make_route, read_route_file, write_route_file)
from sftrl.core import STEP_LIMIT, Verdict
from sftrl.nav import (ENV_ID, INTERSECTION_TEXT, MODES, REWARD_FN_VIRL, NavigationEnv, NavigationStats, build_rail,
                       heading_change, milestones, oracle_answer, parse_answer, relative_turn, split_routes,
                       verify_step)

TIME_BOUND = 0.05   # seconds per verdict on generated answers
CATEGORIES = set(REWARD_FN_VIRL)


def _play(env, seed, route_idx, answer=None):
    "Run one episode with `answer(env)` (the oracle by default); returns (rewards, last info, terminated, truncated)."
    answer = answer or (lambda e: oracle_answer(e.point, e.absolute_action))
    obs, info = env.reset(seed=seed, options={'route_idx': route_idx})
    rewards = []
    while True:
        obs, reward, terminated, truncated, info = env.step(answer(env))
        rewards.append(reward)
        if terminated or truncated: return rewards, info, terminated, truncated


# --- the oracle always succeeds ------------------------------------------------------------------------------

@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('split,absolute', [('train', True), ('train', False), ('id', True), ('ood_rule', False),
                                            ('ood_visual', True), ('ood_visual', False)])
def test_oracle_always_succeeds(split, absolute, mode):
    env = NavigationEnv.for_split(split, n_routes=18, absolute_action=absolute, mode=mode, n_intersections=(1, 6))
    for k in range(18):
        rewards, info, terminated, truncated = _play(env, seed=k, route_idx=k)
        assert rewards == [1.0] * len(env.task.rail)
        assert (terminated, truncated, info['is_success']) == (True, False, True)


@pytest.mark.parametrize('absolute', [True, False])
def test_vision_oracle_succeeds_and_images_fit_the_space(absolute):
    env = NavigationEnv.for_split('ood_visual', vision=True, resolution=48, absolute_action=absolute)
    for k in (0, 9):
        obs, info = env.reset(seed=k, options={'route_idx': k})
        assert env.observation_space.contains(obs)
        while True:
            obs, reward, terminated, truncated, info = env.step(oracle_answer(env.point, absolute))
            assert reward == 1.0 and obs['image'].shape == (101, 101, 3)
            if terminated: break
        assert info['is_success']


# --- ground truth ------------------------------------------------------------------------------------------

@given(st.integers(0, 359), st.integers(0, 359), st.integers(-3, 3))
def test_relative_turn_depends_only_on_the_wrapped_change(previous, new, turns):
    assert relative_turn(previous, new) == relative_turn(previous + 360 * turns, new)
    change = heading_change(previous, new)
    assert -180 < change <= 180 and (new - previous - change) % 360 == 0
    if abs(new - previous) <= 180:
        assert relative_turn(previous, new) == relative_turn(previous, new, 'official')


def test_official_mode_keeps_the_heading_wrap_around_quirk():
    # from 350° to 10° is a 20° turn to the right; the official code subtracts without wrapping (-340°: 'left')
    assert relative_turn(350, 10) == 'slightly right' and relative_turn(350, 10, 'official') == 'left'
    assert relative_turn(10, 350) == 'slightly left' and relative_turn(10, 350, 'official') == 'right'


def test_ground_truth_agrees_with_the_city():
    routes = RouteSet('train', n_routes=40, routes_per_city=10, n_intersections=(1, 6))
    for k in range(len(routes)):
        city, route, record = routes.city(k), routes.route(k), routes.record(k)
        stones = milestones(record)
        points = (route.start,) + route.waypoints
        for stone, a, b in zip(stones, points, points[1:]):
            assert abs((stone.heading - bearing(a, b) + 180) % 360 - 180) < 1.0     # int() of the true heading
            assert stone.direction == compass_direction(stone.heading)
        for init in (0, 10, 170, 181, 359):
            task = build_rail(record, init, np.random.default_rng(k))
            nodes = [p for p in task.rail if p.absolute_action != 'forward()']
            headings = [init] + [s.heading for s in stones]
            for j, p in enumerate(nodes[:-1]):
                assert p.absolute_action == f'turn_direction({compass_direction(headings[j + 1])})'
                change = (headings[j + 1] - headings[j] + 180) % 360 - 180
                expected = 'left' if change < -45 else 'right' if change > 45 else 'slightly left' if change <= 0 else 'slightly right'
                if abs(change) != 180: assert p.relative_action == f'turn_direction({expected})'
                assert p.intersection == (j > 0) and (INTERSECTION_TEXT in p.observation()) == (j > 0)
                assert task.instructions[p.instruction_idx - 1].startswith(('First, turn', 'Turn'))
            assert nodes[-1].absolute_action == nodes[-1].relative_action == 'stop()'
            assert all(p.heading == nodes[i].heading for i, p in _between(task.rail))
            assert all(task.instructions[p.instruction_idx - 1].startswith('Move forward') for p in task.rail if p.absolute_action == 'forward()')


def _between(rail):
    "(index of the next node, point) for every straight-line point."
    nodes_seen = 0
    for i, p in enumerate(rail):
        if p.absolute_action != 'forward()': nodes_seen += 1; continue
        yield nodes_seen, p


def test_straight_points_follow_the_official_rules():
    routes = RouteSet('eval', n_routes=10)
    for k in range(10):
        record = routes.record(k)
        dense = build_rail(record, 90, np.random.default_rng(0), drop_rate=0.0)
        none = build_rail(record, 90, np.random.default_rng(0), drop_rate=1.0)
        assert [p for p in none.rail if p.absolute_action == 'forward()'] == []
        nodes = [record['start_place']['relocated_geocode']] + record['route_results']['geocode_list']
        legs = [geocode_distance(a, b) for a, b in zip(nodes, nodes[1:])]
        forwards = [sum(1 for j in range(1, 5) if d * j / 5 > 8 and d * (5 - j) / 5 > 8) for d in legs]
        assert sum(forwards) == sum(p.absolute_action == 'forward()' for p in dense.rail)


# --- verdicts ----------------------------------------------------------------------------------------------

def _answer(observation, instruction, action):
    return json.dumps({'current observation': observation, 'current instruction': instruction, 'action': action})


def test_wrong_answers_get_the_right_verdicts():
    env = NavigationEnv.for_split('train', n_routes=5)
    env.reset(seed=0, options={'route_idx': 2})
    others = {p.instruction for p in env.task.rail}
    for p in env.task.rail:
        obs, instr, right = p.observation(), p.instruction, p.absolute_action
        wrong = 'turn_direction(north)' if right != 'turn_direction(north)' else 'forward()'
        other = next(s for s in others if s != instr)
        assert verify_step(_answer(obs, instr, right), p).correct
        v = verify_step(_answer(obs, instr, wrong), p)
        assert (v.category, v.reward) == ('INCORRECT_ACTION', -1.0) and v.feedback.startswith('you make incorrect action')
        flipped = obs.replace(INTERSECTION_TEXT, '') if p.intersection else obs + INTERSECTION_TEXT
        v = verify_step(_answer(flipped, instr, wrong), p)
        assert (v.category, v.reward) == ('INCORRECT_OBS', -1.5)
        assert v.feedback.startswith('you are at an intersection' if p.intersection else 'you are not at any intersection')
        v = verify_step(_answer(obs, other, wrong), p)
        assert (v.category, v.reward) == ('INCORRECT_INSTRUCTION', -1.75)
        # the official verifier: the observation check looks at the landmark text only
        v = verify_step(_answer(obs, other, wrong), p, mode='official')
        assert v.category == ('INCORRECT_OBS' if p.intersection else 'INCORRECT_ACTION')
        assert verify_step(_answer(flipped, instr, wrong), p, mode='official').category == ('INCORRECT_ACTION' if p.intersection else 'INCORRECT_OBS')
        # a correct action wins whatever the other fields say
        assert verify_step(_answer('nonsense intersection', other, right), p).correct
        assert not verify_step(_answer(obs, instr, right.upper()), p).correct


def test_revision_budget_is_per_position():
    env = NavigationEnv.for_split('train', n_routes=5)
    env.reset(seed=3, options={'route_idx': 0})
    assert env.step('x')[1] == -1.0                          # try 1 at position 0
    _, reward, _, _, info = env.step(oracle_answer(env.point))   # try 2: correct, moves on
    assert reward == 1.0 and info['tries_left'] == 2 and len(info['messages']) == 1
    assert env.step('x')[1] < 0 and env.step('x')[1] < 0          # both tries at position 1
    _, reward, terminated, truncated, info = env.step(oracle_answer(env.point))
    assert (reward, terminated, truncated, info['category'], info['is_success']) == (-1.0, False, True, STEP_LIMIT.category, False)


# --- hostile and generated answers ---------------------------------------------------------------------------

_RAIL = NavigationEnv.for_split('train', n_routes=3)
_RAIL.reset(seed=0, options={'route_idx': 1})
POINTS = list(_RAIL.task.rail)


def _judge(text):
    "Verdicts at every kind of point, both modes and action spaces; returns the slowest time (best of 3)."
    worst = 0.0
    for point in (POINTS[0], next(p for p in POINTS if p.intersection), POINTS[-1]):
        for mode in MODES:
            for absolute in (True, False):
                best = float('inf')
                for _ in range(3):
                    start = time.perf_counter()
                    verdict = verify_step(text, point, absolute_action=absolute, mode=mode)
                    best = min(best, time.perf_counter() - start)
                    if best < TIME_BOUND: break
                assert isinstance(verdict, Verdict) and verdict.category in CATEGORIES
                assert verdict.reward == REWARD_FN_VIRL[verdict.category] and verdict.feedback.endswith('.')
                worst = max(worst, best)
    answer = parse_answer(text)
    assert all(v is None or (isinstance(v, str) and len(v) <= 2000) for v in (answer.observation, answer.instruction, answer.action))
    return worst


_VALUES = st.one_of(st.text(max_size=40), st.sampled_from(['forward()', 'stop()', 'turn_direction(north)',
                    'turn_direction(slightly left)', INTERSECTION_TEXT, 'None', '', '"', "'", '}', '{', ',']))


@st.composite
def _near_answers(draw):
    obs, instr, action = draw(_VALUES), draw(_VALUES), draw(_VALUES)
    q = draw(st.sampled_from(['"', "'", '']))
    fields = [f'{q}current observation{q}: {q}{obs}{q}', f'{q}current instruction{q}: {q}{instr}{q}', f'{q}action{q}: {q}{action}{q}']
    fields = draw(st.permutations(fields))[:draw(st.integers(0, 3))]
    body = '{' + draw(st.sampled_from([',', ',\n', ', '])).join(fields) + draw(st.sampled_from(['', ',', ',\n'])) + '}'
    return draw(st.text(max_size=20)) + body + draw(st.text(max_size=20))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), _near_answers()))
def test_any_answer_gets_a_verdict_quickly(text):
    assert _judge(text) < TIME_BOUND


@settings(max_examples=200, deadline=None)
@given(_VALUES, _VALUES)
def test_near_json_is_read(instr, action):
    for text in (f"{{'current instruction': '{instr}', 'action': '{action}',}}",
                 f'Here you go:\n{{"current instruction": "{instr}",\n "action": "{action}",\n}}\nDone.'):
        answer = parse_answer(text)
        if not any(c in action for c in '"\'\n,}{\\') and action.strip() == action and 'action' not in instr.lower():
            assert answer.action == action, text


@pytest.mark.parametrize('text', [
    '{' * 1_000_000, '[' * 1_000_000 + ']' * 1_000_000, '"action": "' * 200_000, "'action': '" * 200_000,
    'action:' * 300_000, '{"action": "' + 'x' * 2_000_000 + '"}', '{"action": "forward()",' + ' ' * 2_000_000 + '}',
    ',' * 1_000_000 + '}', 'intersection ' * 200_000, '\x00\ud7ff' * 500_000, 'transaction:' * 200_000])
def test_megabyte_answers_are_bounded(text):
    tracemalloc.start()
    try:
        worst = _judge(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert worst < 1.0, f'{worst:.2f}s'
    assert peak < 8 * len(text) + 10_000_000, f'{peak / 1e6:.0f} MB'


def _official_reward(text, point, absolute):
    "The official verifier's reward, written here from its behaviour (json.loads(text)[key], else the quoted-key regex,"
    " else 'None'; then `'intersection' in value` on the value itself); raises TypeError where the official code does."
    def field(key):
        try: return json.loads(text)[key]
        except Exception: pass
        match = re.search(f'"{re.escape(key)}": "(.*?)"', text)
        return match.group(1) if match else 'None'
    if field('action') == point.action(absolute): return 1.0
    observation, landmark = field('current observation'), point.landmark
    if 'intersection' in observation and 'intersection' not in landmark: return -1.5
    if 'intersection' not in observation and 'intersection' in landmark: return -1.5
    return -1.0


_OBSERVATIONS = st.one_of(
    st.sampled_from(['intersection', INTERSECTION_TEXT, 'nothing', '']).map(json.dumps),
    st.lists(st.sampled_from(['intersection', INTERSECTION_TEXT, 'x', 3, None]), max_size=3).map(json.dumps),
    st.dictionaries(st.sampled_from(['intersection', INTERSECTION_TEXT, 'x']), st.integers(0, 1), max_size=2).map(json.dumps),
    st.sampled_from(['3', '-1.5', 'null', 'true', 'false', 'NaN', 'Infinity']))


@settings(max_examples=200, deadline=None)
@given(_OBSERVATIONS, st.sampled_from(['forward()', 'stop()', 'x']), st.integers(0, 2), st.booleans())
def test_official_mode_equals_the_official_verdict_on_any_json_observation(observation, action, where, absolute):
    "Strings, lists and objects get the official verdict; where the official code raises, sftrl's documented one (no claim)."
    point = POINTS[where]
    text = f'{{"current observation": {observation}, "current instruction": "x", "action": "{action}"}}'
    verdict = verify_step(text, point, absolute_action=absolute, mode='official')
    try: expected = _official_reward(text, point, absolute)
    except TypeError: expected = _official_reward(text.replace(observation, '"no claim"', 1), point, absolute)
    assert verdict.reward == expected, (text, verdict)


def test_step_rejects_non_text_and_never_raises_on_text():
    env = NavigationEnv.for_split('train', n_routes=3)
    env.reset(seed=0)
    with pytest.raises(TypeError): env.step(None)
    for text in ['', '{}', '{"action": null}', '{"action": ["forward()"]}', '{"current observation": 3}', '\ud800']:
        env.reset(seed=0)
        env.step(text)


# --- reproducibility ---------------------------------------------------------------------------------------

def test_same_seed_same_world_and_images():
    a, b = make_city('canal', 11), make_city('canal', 11)
    np.testing.assert_array_equal(a.nodes, b.nodes)
    assert a.edges == b.edges and a.buildings == b.buildings and a.landmarks == b.landmarks
    assert make_route(a, 3, np.random.default_rng(5)) == make_route(b, 3, np.random.default_rng(5))
    assert [RouteSet('benchmark', HELD_OUT_STYLES, 18, 2).record(k) for k in range(18)] == \
           [RouteSet('benchmark', HELD_OUT_STYLES, 18, 2).record(k) for k in range(18)]
    images = []
    for _ in range(2):
        env = NavigationEnv.for_split('ood_visual', vision=True, resolution=64)
        obs, _ = env.reset(seed=4, options={'route_idx': 7})
        obs, *_ = env.step(oracle_answer(env.point))
        images.append(obs['image'].tobytes())
    assert images[0] == images[1]
    other = NavigationEnv.for_split('ood_visual', vision=True, resolution=64, seed=1).reset(seed=4, options={'route_idx': 7})[0]
    assert other['image'].tobytes() != images[0]


def test_official_mode_renders_the_official_headings():
    kw = dict(vision=True, resolution=48)
    fixed, official = NavigationEnv.for_split('ood_visual', **kw), NavigationEnv.for_split('ood_visual', mode='official', **kw)
    a, b = fixed.reset(seed=0, options={'route_idx': 0})[0], official.reset(seed=0, options={'route_idx': 0})[0]
    assert a['image'].shape == b['image'].shape and a['image'].tobytes() != b['image'].tobytes()


# --- the official route-file format ---------------------------------------------------------------------------

def test_route_file_round_trip(tmp_path):
    records = [split_routes(s, n_routes=6).record(k) for s in ('train', 'id', 'ood_visual') for k in range(6)]
    path = write_route_file(records, tmp_path / 'route_infos.json', dest_idx=123)
    assert json.loads(path.read_text())[1] == 123
    assert read_route_file(path) == records
    from_file, direct = NavigationEnv(path), NavigationEnv(records)
    for k in range(len(records)):
        ra, ia, *_ = _play(from_file, seed=k, route_idx=k)
        rb, ib, *_ = _play(direct, seed=k, route_idx=k)
        assert from_file.task == direct.task and ra == rb and ia['messages'] == ib['messages']


def test_reads_a_hand_written_official_route(tmp_path):
    "A route in the collector's exact layout (values as V-IRL writes them), not produced by sftrl."
    milestone = '\n{{\n"intersection_idx": "{i}",\n"landmarks": "{lm}",\n"distance": "{d} meters",\n"human_heading": "{hh}",\n"to_next_intersection_heading": "{h} ({n})",\n}}\n'
    info = (milestone.format(i=1, lm='The Dutch is on your right front', d=80, hh=0, h=177, n='south')
            + milestone.format(i=2, lm='No landmark nearby', d=95, hh=177, h=268, n='west')
            + milestone.format(i=3, lm='The destination Shuka is on your left', d=60, hh=268, h=270, n='west'))
    route = {'start_place': {'name': 'Lola Taverna', 'relocated_geocode': [40.7260, -74.0010]},
             'dest_place': {'name': 'Shuka', 'geocode': [40.7252, -74.0030]},
             'route_results': {'geocode_list': [[40.72528, -74.00099], [40.72526, -74.00211], [40.72526, -74.00282]],
                               'landmark_list': [{'name': 'The Dutch'}, None]},
             'init_heading': 0, 'milestone_info': info}
    path = tmp_path / 'route_infos.json'
    path.write_text(json.dumps([[route], 1]))
    env = NavigationEnv(path)
    rewards, info, terminated, _ = _play(env, seed=0, route_idx=0)
    assert terminated and info['is_success'] and set(rewards) == {1.0}
    assert env.task.instructions[1] == 'Move forward until you reach next intersection where The Dutch is on your right front.'
    assert env.task.instructions[3] == 'Move forward until you reach next intersection.'
    assert env.task.instructions[4] == 'Turn slightly right to face west.'
    assert env.task.instructions[5] == 'Move forward until you reach destination where The destination Shuka is on your left.'
    with pytest.raises(ValueError, match='vision needs'): NavigationEnv(path, vision=True)
    path.write_text(json.dumps([[{'start_place': {}}], 1]))
    with pytest.raises(ValueError, match='lacks'): read_route_file(path)


# --- splits -------------------------------------------------------------------------------------------------

def test_splits_cannot_leak():
    train, evaluation, visual = split_routes('train'), split_routes('id'), split_routes('ood_visual')
    train_records = [train.record(k) for k in range(0, len(train), 3)]
    eval_records = [evaluation.record(k) for k in range(len(evaluation))]
    assert {r['style'] for r in train_records} == {r['style'] for r in eval_records} == {HOME_STYLE}
    assert not {r['route_id'] for r in train_records} & {r['route_id'] for r in eval_records}
    assert not {r['city_id'] for r in train_records} & {r['city_id'] for r in eval_records}
    assert not {train.city(k).seed for k in range(0, 1000, 20)} & {evaluation.city(k).seed for k in range(0, 240, 20)}
    assert [visual.record(k)['style'] for k in range(18)] == [s for s in HELD_OUT_STYLES for _ in range(2)]
    assert split_routes('ood_rule').record(5) == evaluation.record(5)


def test_gym_make_and_env_checker():
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # the passive env checker must find nothing to warn about
        env = gym.make(ENV_ID, split='ood_visual', vision=True, resolution=32)
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(oracle_answer(env.unwrapped.point))
    assert reward == 1.0 and set(obs) == {'text', 'image'}
    with pytest.raises(ValueError, match='split must be'): gym.make(ENV_ID, split='nope')


def test_stats_match_a_hand_count():
    env = NavigationEnv.for_split('train', n_routes=3)
    stats = NavigationStats()
    # episode 1: one wrong try then the oracle → success; episode 2: three wrong answers → truncated
    env.reset(seed=0, options={'route_idx': 0})
    first = True
    while True:
        answer = 'x' if first else oracle_answer(env.point)
        first = False
        _, _, terminated, truncated, info = env.step(answer)
        stats.add(info, terminated, truncated)
        if terminated or truncated: break
    n = len(env.task.rail)
    env.reset(seed=1)
    for _ in range(3):
        _, _, terminated, truncated, info = env.step('x')
        stats.add(info, terminated, truncated)
    assert (stats.verified_steps, stats.correct_steps, stats.step_limit_calls) == (n + 1 + 2, n, 1)
    assert (stats.episodes, stats.successes, stats.success_rate) == (2, 1, 0.5)
    assert stats.per_step_accuracy() == n / (n + 3) and stats.per_step_accuracy(True) == n / (n + 4)

"""The vision foundation: captions that say exactly what is drawn, no task format (the LLaVA resume fix is tested in nbs/04c_runs)."""
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from sftrl.base import BaseConfig, base_corpus, task_markers
from sftrl.base_vision import (NO_CARD, CaptionPairs, CardReader, TowerConfig, VisionBaseConfig,
                               caption_collator, card_id, card_table_pair, legible_signs, patch_cards, pretrain_tower,
                               read_cards, table_caption, tower_collator, view_caption, view_pair)
from sftrl.cards import DECK, Card, render_table
from sftrl.city import STYLES, make_city
from sftrl.core import config_hash
from sftrl.models import IMAGE_TOKEN, build_tokenizer, build_vision_policy

cards_strategy = st.lists(st.sampled_from(DECK), min_size=1, max_size=4)


@given(cards_strategy)
def test_a_table_caption_reads_back_as_its_cards(cards):
    assert read_cards(table_caption(cards)) == cards


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_caption_determines_the_picture(seed):
    image, caption = card_table_pair(np.random.default_rng(seed), 64)
    cards = read_cards(caption)
    assert 1 <= len(cards) <= 4
    assert np.array_equal(np.asarray(image), np.asarray(render_table(cards, 64)))


def test_read_cards_ignores_what_is_not_a_card():
    assert read_cards("the 1 of cups, the queen of swords, the 11 of hearts, the jack of clubs") == [Card('J', 'C')]


@pytest.fixture(scope='module')
def cities():
    return [make_city(style, 0) for style in STYLES]


def test_view_captions_name_real_signs_inside_the_frame(cities):
    rng = np.random.default_rng(3)
    names = {lm.name for c in cities for lm in c.landmarks}
    found = 0
    for _ in range(30):
        city = cities[int(rng.integers(len(cities)))]
        u, v = city.edges[int(rng.integers(len(city.edges)))]
        position = (city.nodes[u] + city.nodes[v]) / 2
        signs = legible_signs(city, position, float(rng.integers(0, 360)), 224)
        assert [x for x, _ in signs] == sorted(x for x, _ in signs)
        assert all(0 <= x <= 224 and name in names for x, name in signs)
        found += len(signs)
    assert found > 0


def test_view_caption_wording():
    assert view_caption([], 224) == "A street view with no sign close enough to read."
    assert view_caption([(112.0, 'Weber Library')], 224) == "A street view. Signs you can read: Weber Library ahead."


def test_a_small_picture_shows_no_readable_sign(cities):
    rng = np.random.default_rng(0)
    for _ in range(10):
        _, caption = view_pair(rng, 16, cities)   # 16 pixels: no letters are drawn at 6 px
        assert caption.endswith("no sign close enough to read.")


def test_captions_never_show_a_task_format():
    data = CaptionPairs(400, 64, seed=1, documents=base_corpus(100, seed=1))
    text = '\n'.join(data[i]['text'] for i in range(len(data)))
    assert [m for m in task_markers() if m in text] == []


def test_items_are_rebuilt_from_seed_and_index():
    docs = base_corpus(30, seed=0)
    a, b = CaptionPairs(50, 64, seed=2, documents=docs), CaptionPairs(50, 64, seed=2, documents=docs)
    assert [a[i]['text'] for i in (3, 1, 3)] == [b[3]['text'], b[1]['text'], b[3]['text']]
    assert [a[i]['text'] for i in range(20)] != [CaptionPairs(50, 64, seed=3, documents=docs)[i]['text'] for i in range(20)]


@pytest.fixture(scope='module')
def policy():
    tokenizer = build_tokenizer(base_corpus(50, seed=0) + ['Cards on the table, left to right: the king of hearts.'], 400)
    return build_vision_policy(tokenizer, 'smoke', seed=0)


def test_the_collator_trains_on_words_only(policy):
    docs = base_corpus(20, seed=0)
    items = [CaptionPairs(30, 64, seed=0, documents=docs)[i] for i in range(8)]
    items.append(dict(image=None, text=docs[0]))
    batch = caption_collator(policy.processor)(items)
    image_id = policy.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    n_images = sum(it['image'] is not None for it in items)
    assert batch['pixel_values'].shape[0] == n_images
    assert int((batch['input_ids'] == image_id).sum()) == n_images * (64 // 16) ** 2
    assert not ((batch['labels'] == image_id).any())
    assert bool((batch['labels'][batch['attention_mask'] == 0] == -100).all())
    # one EOS closes each item; a text document that is a chat also has one after each assistant turn
    eos = policy.tokenizer.eos_token
    assert int((batch['labels'] == policy.tokenizer.eos_token_id).sum()) == sum(1 + (it['text'] or '').count(eos) for it in items)
    with torch.no_grad():
        assert policy.model(**batch).loss.item() > 0


def test_a_vision_base_is_named_by_its_whole_config():
    a = VisionBaseConfig()
    assert config_hash(a) == config_hash(VisionBaseConfig())
    assert config_hash(a) != config_hash(VisionBaseConfig(text=BaseConfig(seed=1)))
    assert config_hash(a) != config_hash(VisionBaseConfig(styles=('home',)))
    with pytest.raises(ValueError, match='unknown caption kinds'):
        CaptionPairs(3, 64, mixture={'poems': 1.0})


def test_every_patch_of_the_tower_lesson_names_the_card_under_it(policy):
    items = [CaptionPairs(40, 64, seed=0, mixture={'cards': 1.0})[i] for i in range(12)]
    batch = tower_collator(policy.processor.image_processor, 4)(items)
    assert batch['pixel_values'].shape[0] == len(items) and batch['labels'].shape == (len(items), 16)
    for item, labels in zip(items, batch['labels'].tolist()):
        cards = read_cards(item['text'])
        assert set(labels) - {NO_CARD} <= {card_id(c) for c in cards}
    cards = [Card('7', 'H'), Card('2', 'C'), Card('Q', 'S'), Card('10', 'D')]
    grid = patch_cards(cards, 1200, 14).reshape(14, 14)
    assert [grid[7, c] for c in (1, 4, 8, 11)] == [card_id(c) for c in cards]    # left to right across the middle row
    assert (grid[0] == NO_CARD).all() and (grid[13] == NO_CARD).all()             # cloth above and below the cards
    assert len({card_id(card) for card in DECK}) == 52 and NO_CARD == 52
    out = CardReader(policy.model.model.vision_tower)(**batch)
    assert out['logits'].shape == (len(items), 16, NO_CARD + 1) and out['loss'].item() > 0


def test_an_interrupted_tower_stage_resumes_to_the_same_tower(policy, tmp_path):
    config = TowerConfig(pairs=64, batch_size=4, max_steps=6, save_steps=3)
    build = lambda: build_vision_policy(policy.tokenizer, 'smoke', seed=0)
    assert pretrain_tower(build(), config, tmp_path / 'a', progress=False, stop_after=3) == {'steps': 3}
    resumed, straight = build(), build()
    report = pretrain_tower(resumed, config, tmp_path / 'a', progress=False)
    assert report == pretrain_tower(straight, config, tmp_path / 'b', progress=False)
    assert report['steps'] == 6 and 0 <= report['card_patch_accuracy'] <= 1
    for p, q in zip(resumed.model.model.vision_tower.parameters(), straight.model.model.vision_tower.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert config_hash(VisionBaseConfig()) != config_hash(VisionBaseConfig(tower=TowerConfig(max_steps=0)))

"""Does a base read a stated card rule, and does SFT keep it? (issue 18's Init headroom; not run in CI)

For each base variant (the preset's base with its instruction stage, and optionally its pretraining, made longer):
build it (cached), print its generic probes (`sftrl.base.probe_instructions`, `probe_base`), train the first
`--sft-steps` steps of the preset's GP-L SFT run from it, and at the base and every saved SFT checkpoint print the
*forced rule-reading probe*: the GP-L chat, then the oracle's answer up to `"number": [`, so the format is given
and only the rule is asked; per face card (J, Q, K), the share of greedy numbers equal to the stated rule's value
and the share written as 10, on rule-OOD hands (J, Q, K = 11, 12, 13) and ID hands (all 10) as the control.

A diagnostic of the mechanism: it reads OOD numbers, so nothing may be chosen on it (the base chapter's rule).

Run: .venv/bin/python benchmarks/rule_reading.py [--scales 1 3] [--pretrain-scale 1] [--sft-steps 50]
                                                 [--preset tiny] [--hands 60] [--probes 100]
                                                 [--root runs/rule-reading]
"""
import argparse
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from sftrl.base import BASE_PRESETS, pretrain_base, probe_base, probe_instructions
from sftrl.generate import chat_texts
from sftrl.models import load_policy
from sftrl.runs import checkpoint_table
from sftrl.sft import sft_folder, sft_run, train_sft
from sftrl.tasks import make_env, oracle_answer, start_episode

FACES = {'J': 11, 'Q': 12, 'K': 13}   # the rule-OOD values; ID counts all three as 10
PREFIX = '"number": ['


def base_variant(preset='tiny', scale: float = 1, pretrain_scale: float = 1):
    "The preset's base config with its instruction stage `scale` times (and its pretraining `pretrain_scale` times) as long: steps and documents."
    config = BASE_PRESETS[preset]
    stage = config.instruction
    stage = replace(stage, documents=round(stage.documents * scale), max_steps=round(stage.max_steps * scale))
    if pretrain_scale == 1: return replace(config, instruction=stage)
    return replace(config, documents=round(config.documents * pretrain_scale), max_steps=round(config.max_steps * pretrain_scale),
                   warmup_steps=round(config.warmup_steps * pretrain_scale), instruction=stage)


def forced_items(split: str, n: int = 60, seed: int = 5000) -> list[tuple[list[dict], str, list[str]]]:
    "`n` GP-L hands of `split` that hold a face card: (chat, the oracle's answer up to the number list, the cards)."
    env, items = make_env('gp-l', split), []
    while len(items) < n:
        obs, info = start_episode(env, 'gp-l', split, seed)
        seed += 1
        cards = re.search(r"Cards: \[(.*?)\]", info['messages'][-1]['content']).group(1).replace("'", '').split(', ')
        answer = oracle_answer('gp-l', obs, info)
        if answer is None or not set(cards) & set(FACES): continue
        items.append((info['messages'], answer[:answer.index(PREFIX) + len(PREFIX)], cards))
    return items


def forced_rule_reading(policy, items, split: str, batch_size: int = 20) -> dict:
    "The forced probe on `items` of `split`: per face card, the share written as the stated rule's value and as 10."
    tokenizer = policy.tokenizer
    tokenizer.padding_side = 'left'
    texts = [t + prefix for t, (_, prefix, _) in zip(chat_texts(policy, [{'messages': m} for m, _, _ in items]), items)]
    written = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i:i + batch_size], return_tensors='pt', padding=True)
        with torch.no_grad():
            out = policy.model.generate(**batch, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        written += tokenizer.batch_decode(out[:, batch['input_ids'].shape[1]:], skip_special_tokens=True)
    faces = []
    for text, (_, _, cards) in zip(written, items):
        numbers = [int(x) for x in re.findall(r'\d+', text.split(']')[0])]
        for k, card in enumerate(cards):
            if card not in FACES: continue
            got = numbers[k] if k < len(numbers) else None
            faces.append({'rule': got == (FACES[card] if split == 'ood_rule' else 10), 'ten': got == 10})
    faces = pd.DataFrame(faces)
    return {'split': split, 'face_cards': len(faces), 'as_rule': faces.rule.mean(), 'as_10': faces.ten.mean()}


def study(scales=(1, 3), pretrain_scale: float = 1, sft_steps: int = 50, preset='tiny', hands: int = 60, root='runs/rule-reading',
          probes: int = 100):
    "Every variant's generic probes and forced probe (base, then each SFT checkpoint up to `sft_steps`): one table."
    items, rows = {s: forced_items(s, hands) for s in ('ood_rule', 'id')}, []
    for scale in scales:
        config = base_variant(preset, scale, pretrain_scale)
        base = pretrain_base(config, cache_dir=Path(root) / 'base', progress=False)
        final = Path(base.model.name_or_path)
        print(f'\ninstruction stage x{scale:g}, pretraining x{pretrain_scale:g} ({final.parent.name}): generic probes')
        print(probe_instructions(base, n=probes).round(3).to_string(index=False))
        print(probe_base(base, n=probes).round(3).to_string(index=False))
        run, runs = sft_run(preset, 'gp-l', base=str(final)), Path(root) / 'sft'
        train_sft(run, root=runs, progress=False, stop_after=sft_steps)   # nothing more once a checkpoint is at sft_steps
        saved = checkpoint_table(sft_folder(run, runs)).query('step <= @sft_steps')
        for step, path in [(0, final)] + [(s, p) for s, p in zip(saved.step, saved.path) if (Path(p) / 'config.json').exists()]:
            policy = base if step == 0 else load_policy(path)
            rows += [{'scale': scale, 'sft_step': step, **forced_rule_reading(policy, items[s], s)} for s in items]
    table = pd.DataFrame(rows)
    print('\nforced rule reading: share of face cards written as the stated rule\'s value (and as 10)')
    print(table.round(3).to_string(index=False))
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scales', type=float, nargs='+', default=[1, 3], help='instruction-stage lengths, times the preset\'s')
    parser.add_argument('--pretrain-scale', type=float, default=1)
    parser.add_argument('--sft-steps', type=int, default=50)
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--hands', type=int, default=60)
    parser.add_argument('--root', default='runs/rule-reading')
    parser.add_argument('--probes', type=int, default=100, help='items a generic probe')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return study(tuple(args.scales), args.pretrain_scale, args.sft_steps, args.preset, args.hands, args.root, args.probes)


if __name__ == '__main__':
    main()

"""OpenRLHF: the reward function of sftrl's text tasks (GP-L, V-IRL-L), and their prompt data.

Reward: `--remote_rm_url examples/openrlhf_reward.py`. OpenRLHF loads this file and calls
`reward_func(queries, prompts, labels)` on each batch (queries: prompt + response; labels: the column
named by `--label_key`). It returns {"rewards", "scores", "extra_logs"}: the sftrl verifier's reward for
a first try, 1.0 / 0.0 for a correct / wrong answer, and that count for logging. Older OpenRLHF versions
expect the rewards tensor alone: use `reward_func(...)["rewards"]` there.

Data: `python examples/openrlhf_reward.py --task gp-l --split train --n 1000 --out gp-l-train.jsonl`,
then `--prompt_data gp-l-train.jsonl --input_key prompt --label_key metadata --apply_chat_template`.

See nbs/12_rewards.ipynb (sftrl.rewards) for what the rows hold and how the score is checked.
"""
import argparse

from sftrl.rewards import episodes_dataset, openrlhf_reward
from sftrl.tasks import get_task

__all__ = ['reward_func', 'main']

reward_func = openrlhf_reward   # the name OpenRLHF looks up in this file


def main(argv=None) -> str:
    "Write `--n` episodes of the text task `--task`/`--split` as OpenRLHF prompt data (JSON lines) to `--out`."
    parser = argparse.ArgumentParser(description='sftrl episodes as OpenRLHF prompt data')
    parser.add_argument('--task', default='gp-l', help='gp-l or virl-l (vision tasks are not wired for OpenRLHF)')
    parser.add_argument('--split', default='train', help='train, id or ood_rule')
    parser.add_argument('--n', type=int, default=1000, help='episodes (a V-IRL episode gives a row per position)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', required=True, help='the JSON-lines file to write')
    args = parser.parse_args(argv)
    if get_task(args.task).vision: parser.error(f'{args.task} is a vision task: only gp-l and virl-l are wired for OpenRLHF')
    episodes_dataset(args.task, args.split, args.n, args.seed).to_json(args.out)
    return args.out


if __name__ == '__main__':
    print(main())

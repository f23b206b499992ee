"""prime-rl / verifiers: sftrl's text tasks (GP-L, V-IRL-L) as a verifiers environment.

prime-rl trains on environments written with the `verifiers` library: a module whose
`load_environment(...)` returns the environment. Copy this file into an environment module (the layout
verifiers' environment template creates) and install it where prime-rl runs; how prime-rl's
configuration names the environment differs between versions, so see its documentation.

`load_environment(task='gp-l', split='train', n=1000, seed=0)` gives a `vf.SingleTurnEnv` whose rows
are sftrl's positions (columns prompt, answer, info) and whose rubric is one reward function: the sftrl
verifier's reward for a first try. `verifiers` is imported only when `load_environment` is called.

See nbs/12_rewards.ipynb (sftrl.rewards) for what the rows hold and how the score is checked.
"""
from sftrl.rewards import episodes_dataset, verifiers_reward, verifiers_row

__all__ = ['load_environment', 'verifiers_reward']


def load_environment(task: str = 'gp-l', split: str = 'train', n: int = 1000, seed: int = 0, **env_kwargs):
    "A verifiers SingleTurnEnv over `n` seeded episodes of the text task `task`/`split`, scored by sftrl's verifier."
    import verifiers as vf   # not a dependency of sftrl: needed only here
    rows = episodes_dataset(task, split, n, seed, **env_kwargs)
    dataset = rows.map(verifiers_row, remove_columns=rows.column_names)
    return vf.SingleTurnEnv(dataset=dataset, rubric=vf.Rubric(funcs=[verifiers_reward], weights=[1.0]))

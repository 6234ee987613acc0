"""Token-level RL: verifiable-reward environments, rollouts, advantages and losses (GRPO,
REINFORCE), and the token-level tricks built on them (watermarks, prediction sets, ...).

Pure functions over arrays and step functions; the tasks in ``jaxtok/tasks/`` wire them to the
loop, checkpoints and sharding like any other family.
"""

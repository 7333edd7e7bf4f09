"""The training loops: online, offline and O2O/hybrid, each one jitted lax.scan with seeds vmapped,
sharing the host driver (chunks, checkpoints, resume), the replay buffer and vectorized rollouts."""

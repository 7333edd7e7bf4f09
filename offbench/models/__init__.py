"""Learned dynamics models for model-based offline RL: the probabilistic ensemble
(`ensemble.py`) and model rollouts into an on-device buffer (`rollouts.py`)."""

"""Post-training: SFT, reward model, DPO and PPO on TRL, with the tasks and data they train on."""

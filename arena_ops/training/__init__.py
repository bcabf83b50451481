"""Training: pair-judge data selection, TRL stages under DeepSpeed, job launchers, the model registry."""

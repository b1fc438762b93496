"""Measuring and showing: metrics, evaluating a saved adapter, tracking (wandb, CSV), and the names,
colours and figures a reader sees."""

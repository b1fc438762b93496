"""Training: the loop, the optimizer's parameter groups, several processes (DDP, FSDP2), batching,
and scoring a held-out split (the loop's and ``evaluate.py``'s one way)."""

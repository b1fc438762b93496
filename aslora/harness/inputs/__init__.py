"""Data and models: tasks and their splits, the instruction suites' data, model loading, and whether
the Hugging Face Hub is reachable."""

"""Adapters built on one model-level pool of shared low-rank factors, and the dispatch to PEFT."""

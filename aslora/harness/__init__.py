"""Our experiment harness — what ``train.py`` uses to run the paper's comparisons: data and
tasks, model loading, the training loop, checkpoints, settings, reports and tracking.

Kept apart from the method (``aslora.adapters``, ``aslora.params``, ``aslora.export``,
``aslora.integrations``), as torchtune keeps its library apart from its recipes: ``import aslora``
loads none of this, and researchers who train in their own stack never need it."""

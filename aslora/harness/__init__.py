"""Our experiment harness — what ``train.py`` uses to run the paper's comparisons: data and
tasks, model loading, the training loop, checkpoints, settings, reports and tracking, in five rooms
by job: ``runs`` (what a run is and records), ``state`` (what it keeps to resume), ``training``,
``inputs`` (data and models), ``measuring`` (metrics, evaluation, tracking, what a reader sees).

Kept apart from the method (``aslora.adapters``, ``aslora.params``, ``aslora.export``,
``aslora.integrations``), as torchtune keeps its library apart from its recipes: ``import aslora``
loads none of this, and researchers who train in their own stack never need it.

Imports: torch, transformers, accelerate and safetensors at the top of each module (``import
aslora`` loads them anyway, through PEFT, so a function-local import of them saves nothing);
datasets and matplotlib inside the functions that need them, so validating a config or planning
a grid does not load them (tests/aslora/harness/test_imports.py)."""

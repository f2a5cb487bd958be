"""Upload an export to the Hugging Face hub: ``xdetox export RUN ... --push-to-hub REPO``.

The export is always written locally first, whole, exactly as without ``--push-to-hub``, and it stays there
whatever the upload does: the upload is a copy of a finished export, never a replacement for it. So:

- before anything is written (``check_push``, which ``export(push_to_hub=...)`` runs after its own checks):
  REPO must be a hub repo id, and where the hub is reachable a
  token must be there (``HF_TOKEN`` or ``hf auth login``); otherwise bad input, exit 2, nothing written;
- after the export is written (``push_export``): where the hub cannot be reached (``HF_HUB_OFFLINE`` set, or
  ``hub_offline``'s probe fails), or it does not take the upload, one line names the cause and
  the complete local export (``ServiceUnavailable``, exit 3); ``hf upload REPO OUT`` uploads it later.

``hub_offline`` is the one probe of the hub every lookup asks first (models, ``--data`` dataset ids, pushes).

Importing this module loads neither torch nor ``huggingface_hub``: they load when a push or a probe is asked for.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path

from xdetox._io import first_line
from xdetox.errors import ServiceUnavailable, XdetoxInputError

HUB_URL = "https://huggingface.co"
HTTP_LIBRARIES = frozenset({"httpx", "httpx2", "httpcore", "requests", "urllib3"})
"""The HTTP clients ``huggingface_hub`` may use: an exception of theirs is the network's, not a bug."""


def check_push(repo: str) -> None:
    """Before anything is written: ``repo`` is a hub repo id and, where the hub is reachable, a token exists."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as err:
        raise XdetoxInputError(f"--push-to-hub {repo!r} is not a hub repo id (user/name): {first_line(err)}") from None
    if hub_offline() is None and get_token() is None:
        raise XdetoxInputError("--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")


def push_export(out: Path, repo: str) -> str:
    """Upload the finished export in ``out`` to the hub model repo ``repo`` (created if missing); return its
    URL. Where the hub cannot be reached or does not take the upload: ``ServiceUnavailable``, one line naming
    the cause and the local export, which stays as it is."""
    where = f"the export is complete in {out}; upload it later with `hf upload {repo} {out}`"
    reason = hub_offline()
    if reason:
        raise ServiceUnavailable(f"cannot push to the Hugging Face hub: {reason}; {where}")
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo, repo_type="model", exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=url.repo_id, repo_type="model",
                          commit_message=f"xdetox export ({Path(out).name})")
    except Exception as err:  # noqa: BLE001 -- narrowed just below: only the network's and the hub's errors
        if not is_network_error(err):
            raise
        raise ServiceUnavailable(f"the upload to the Hugging Face hub repo {repo} failed: {first_line(err)};"
                                 f" {where}") from None
    return f"{HUB_URL}/{url.repo_id}"


def is_network_error(err: BaseException) -> bool:
    """An error of the connection or of the hub's answer (an ``OSError``: offline mode, connection refused,
    ``HfHubHTTPError``), or one the HTTP client raised."""
    return isinstance(err, OSError) or type(err).__module__.split(".")[0] in HTTP_LIBRARIES


HUB_PROBE_TIMEOUT_S = 3.0


@lru_cache(maxsize=1)
def hub_offline() -> str | None:
    """Why hub lookups are offline, in words, or None when the hub is reachable.

    ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set: honoured. Otherwise one TCP
    connection to the hub's host (or the HTTPS proxy's) is tried; when it fails,
    ``HF_HUB_OFFLINE=1`` is set for this process, so that the hub client fails at once
    instead of retrying for half a minute.
    """
    from urllib.parse import urlparse
    from urllib.request import getproxies

    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    proxy = getproxies().get("https")
    target = urlparse(proxy if proxy else constants.ENDPOINT)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants.HF_HUB_OFFLINE = True  # read at import time: set the module's value too
        return f"the hub at {host} is unreachable; xdetox set HF_HUB_OFFLINE=1"

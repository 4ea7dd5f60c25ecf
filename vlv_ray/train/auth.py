"""Ray token auth for clients that connect to an existing cluster.

Ray 2.60 starts clusters with token auth on, but its clients (`ray.init(address=…)`, the
job submission client, the `ray job` CLI) send the token only when `RAY_AUTH_MODE=token`
was in the environment when Ray's config was first read. A user who has the cluster's
token (`~/.ray/auth_token`, `RAY_AUTH_TOKEN` or `RAY_AUTH_TOKEN_PATH`) should not also
have to know that, so `use_token_if_available` switches it on, and refreshes Ray's cached
config so that it holds whenever ray was imported.
"""
from __future__ import annotations

import os

MODE_ENV = "RAY_AUTH_MODE"


def use_token_if_available() -> bool:
    """Turn on token auth for this process (and its children) when a token exists.

    An explicit RAY_AUTH_MODE is respected. Returns whether token auth is on.
    """
    mode = os.environ.get(MODE_ENV)
    if mode is not None:
        return mode.lower() == "token"
    from ray._raylet import AuthenticationTokenLoader, Config

    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        return False
    os.environ[MODE_ENV] = "token"
    Config.initialize("")  # Ray caches the mode at import; re-read it, as `ray start` does
    return True


def use_token_for_new_cluster() -> None:
    """Token auth for a cluster this process starts (Ray's default), minus Ray's warning
    announcing it on every run. An explicit RAY_AUTH_MODE is respected."""
    if MODE_ENV in os.environ:
        return
    from ray._raylet import Config

    os.environ[MODE_ENV] = "token"
    Config.initialize("")


def cli_prefix() -> str:
    """What a printed `ray …` command needs in front to authenticate like we did."""
    return f"{MODE_ENV}=token " if os.environ.get(MODE_ENV, "").lower() == "token" else ""

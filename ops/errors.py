"""The errors the CLI turns into a one-line message and exit status 1 (2 for UsageError)."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """Something about the cluster is wrong or missing; the message says what to do."""


class UsageError(ClusterError):
    """The command names something that cannot be meant (an unknown process, the wrong
    role): exit status 2, like a malformed argument."""


class NoCluster(ClusterError):
    """The run directory has no cluster.json: nothing was started there (or it was stopped)."""

    def __init__(self, run_dir: object) -> None:
        super().__init__(f"no cluster running in {run_dir}")

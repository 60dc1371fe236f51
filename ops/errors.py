"""The one error the CLI turns into a one-line message and exit status 1."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """Something about the cluster is wrong or missing; the message says what to do."""


class NoCluster(ClusterError):
    """The run directory has no cluster.json: nothing was started there (or it was stopped)."""

    def __init__(self, run_dir: object) -> None:
        super().__init__(f"no cluster running in {run_dir}")

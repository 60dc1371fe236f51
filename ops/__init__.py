"""The `backchannel` CLI: starts and stops the local cluster, reports its status, seeds
workspaces and changes the ring (show, add, drain, remove). Processes are started detached;
their addresses and pids live in the run directory (``.run/`` by default) so later commands
can find them.

    cli        argument parsing, output (text or --json) and exit codes
    cluster    process lifecycle: spawn, wait, stop, cluster.json, ring compare-and-set
    isolation  refuse a Redis prefix another live cluster uses; explain SQL grant errors
    views      read-only documents: `status` and `ring show`
    ringops    `ring add|drain|remove`, each step an epoch bump the cluster must follow
    leases     the registry's live leases, read from outside the cluster
    probe      /health and /streams of a running process
    progress   progress bars on stderr
"""

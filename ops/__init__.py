"""The `backchannel` CLI: starts and stops the local cluster, reports its status, seeds
workspaces and shows the ring. Processes are started detached; their addresses and pids live
in the run directory (``.run/`` by default) so later commands can find them."""

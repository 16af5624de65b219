"""Replays on the engines clusters have: Slurm for real, Kubernetes and Apptainer as exports.

reprobox never schedules anything itself. `slurm_script`, `kubernetes` and `apptainer` turn a
replay's container spec into what those engines read (pure); `slurm` is the one module that runs
Slurm's commands; `slurm_replay` submits a replay, follows it and gathers it into `replays/`.
"""

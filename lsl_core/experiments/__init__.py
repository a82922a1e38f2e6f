"""Experiments: the commands that produce results (train, evaluate, Table 1, analyze sweeps, reports).

Each experiment module holds one command's orchestration and registers it with `python -m lsl_core`;
the math it calls lives in lsl_core.metrics / lsl_core.interventions / lsl_core.scoring.
"""

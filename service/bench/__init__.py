"""`python -m service.bench`: the service against its ceiling and its baselines, in one run.

Absolute numbers on shared machines mean little; the ratios, all measured in the same run, hold.
"""

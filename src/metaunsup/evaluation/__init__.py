"""The evaluation protocol over task kinds, the classical baselines and convergence curves."""

"""Training runs: typed configs, the wiring of a run, the Trainer and its logs."""

"""The user-facing layer: the command line, its commands, the experiments and the reports."""

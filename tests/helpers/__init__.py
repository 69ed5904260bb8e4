"""Helpers shared by the tests: data markers, small trained checkpoints, random tasks."""

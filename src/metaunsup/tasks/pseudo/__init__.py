"""Pseudo-tasks made from unlabeled data (CACTUs, UMTRA): they never read a label."""

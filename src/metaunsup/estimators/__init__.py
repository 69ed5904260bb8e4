"""scikit-learn estimators over meta-learned models, and self-training on the user's data."""

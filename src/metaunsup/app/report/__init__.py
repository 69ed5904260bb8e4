"""Reports of evaluation results: markdown tables, figures, montages and result pages."""

"""taskonomy.analysis."""

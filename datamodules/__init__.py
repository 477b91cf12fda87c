"""taskonomy.datamodules."""

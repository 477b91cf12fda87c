"""Task families: one LightningModule class per kind of task."""

"""Where a run's numbers go: TensorBoard, CSV, MLflow, W&B, and the run's provenance record.
"""

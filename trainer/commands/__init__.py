"""The console scripts (`train`, `evaluate`, `predict`, `export-model`, `find-lr`) and their wiring:
composing the config, building from it, launching workers. The only layer that knows Hydra.
"""

"""The engine: the Trainer, its step and evaluation, precision, devices, DDP, data loaders, checkpoint files.

Knows nothing of Hydra or the command line: a Trainer is built from plain values.
"""

"""The engine: command line, building from config, the loop, devices, checkpoints.

Importing this package must stay cheap (no torch): `train --help` and `--cfg job` only need
Hydra. Import the heavy modules (`trainer.loop`, `trainer.build`) where they are used.
"""

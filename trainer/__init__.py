"""The toolkit's machinery, by role: `engine` (the Trainer), `tracking` (loggers), `runs` (run
folders, resume, sweeps) and `commands` (the console scripts and their wiring).

Importing this package must stay cheap (no torch): `train --help` and `--cfg job` only need
Hydra. Import the heavy modules (`engine.loop`, `commands.build`) where they are used.
"""

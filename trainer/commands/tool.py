"""Console scripts of their own on train.yaml's config (`find-lr`, `find-batch-size`): set up as `train` is."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra

from decltrain.trainer.commands import console_script
from decltrain.trainer.commands.unknown_keys import explained_composition_errors
from decltrain.trainer.errors import UserError


def run_tool(run: Callable[[Any], object], command: str, config_name: str) -> None:
    """The console script `command`, which composes `configs/<config_name>.yaml` (extending train.yaml)
    as `train` does: set up as `train` is, then `run(cfg)`; a UserError or a composition error is one
    line and exit code 2."""
    console_script.sleeping_openmp_threads()
    console_script.importable_working_directory()
    console_script.register_train_config()

    @hydra.main(version_base="1.3", config_path="../../configs", config_name=config_name)
    def _main(cfg: Any) -> None:
        try:
            run(cfg)
        except UserError as err:
            logging.getLogger("decltrain").error("%s", err)
            sys.exit(console_script.USER_ERROR_EXIT_CODE)

    with explained_composition_errors(command, config_name):
        _main()

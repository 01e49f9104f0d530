"""`train -m hparams_search=...`: the Optuna sweeper plugin, its search space and pruning."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from decltrain.trainer.runs import catalog, optuna_trial, status
from hydra_plugins.decltrain import search_space
from tests.helpers.commands import run_train, train_command


def test_search_space_from_hydra_sweep_syntax():
    space, fixed = search_space.split(
        ["optimizer.lr=tag(log, interval(1e-4, 1e-1))", "model.hidden=choice(64, 128)", "dataset.batch_size=32,64",
         "model.layers=int(interval(1, 4))", "trainer.max_epochs=3", "model.dropout=interval(0, 0.5)",
         "model.dropout=0.1"],  # given again, plain: taken out of the search
        OverridesParser.create())
    assert space == {"optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
                     "model.hidden": CategoricalDistribution([64, 128]),
                     "dataset.batch_size": CategoricalDistribution([32, 64]),
                     "model.layers": IntDistribution(1, 4)}
    assert fixed == ["trainer.max_epochs=3", "model.dropout=0.1"]


@pytest.mark.slow
def test_a_trial_that_cannot_learn_is_pruned_after_good_ones(tmp_path, data_dir):
    """Two good trials at once (hydra/launcher=parallel), then the search continues (same sweep
    folder) with a learning rate too small to learn: the median pruner stops it after its first of
    two epochs. Two workers, one trial left: the study gets exactly n_trials."""
    env = {"DATA_DIR": str(data_dir)}
    fixed = ("trainer.max_epochs=2", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2",
             "dataset.batch_size=64", "model.hidden=64", "model.dropout_fc=0.1", "hydra/launcher=parallel",
             "hydra.launcher.n_jobs=2")
    good = run_train("-m", "hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2", "optimizer.lr=3e-3", *fixed,
                     cwd=tmp_path, env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").iterdir()
    bad = run_train("-m", "hparams_search=mnist_optuna", "hydra.sweeper.n_trials=3", "optimizer.lr=1e-7", *fixed,
                    f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, env=env)
    assert bad.returncode == 0, bad.stdout + bad.stderr

    first, second = (status.read(sweep_dir / f"{n}_mnist_cnn") or {} for n in range(2))
    assert first["started"] < second["ended"] and second["started"] < first["ended"]  # the good trials ran together
    assert first["pid"] != second["pid"]

    study = optuna.load_study(study_name="mnist_cnn", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert [sorted(t.intermediate_values) for t in trials] == [[1, 2], [1, 2], [1]]
    pruned_dir = sweep_dir / "2_mnist_cnn"
    pruned = json.loads((pruned_dir / "optuna_trial.json").read_text())
    assert (pruned["state"], pruned["pruned_at_epoch"]) == ("pruned", 1)
    assert "pruned after epoch 1" in (pruned_dir / "train.log").read_text()
    assert json.loads((pruned_dir / "metrics.json").read_text())["last"]["epoch"] == 1  # stopped: 1 of 2 epochs
    listed = {Path(run.folder).name: run for run in map(catalog.entry, catalog.run_folders(sweep_dir))}
    assert [(name, listed[name].status) for name in sorted(listed)] == [
        ("0_mnist_cnn", "done"), ("1_mnist_cnn", "done"), ("2_mnist_cnn", "pruned")]  # as `runs ls` lists them
    assert listed["2_mnist_cnn"].best == trials[2].intermediate_values[1]
    summary = json.loads((sweep_dir / "summary.json").read_text())  # the continued search's trial, as in any sweep
    assert [(job["number"], job["status"], job["folder"]) for job in summary] == [(2, "pruned", str(pruned_dir))]
    assert "pruned" in (sweep_dir / "summary.txt").read_text()

    results = yaml.safe_load((sweep_dir / "optuna_results.yaml").read_text())
    completed = [t.value for t in trials if t.state == TrialState.COMPLETE]
    assert results["best"]["value"] == pytest.approx(max(completed))
    assert [t["state"] for t in results["trials"]] == ["complete", "complete", "pruned"]
    assert [t["run_dir"] for t in results["trials"]] == [str(sweep_dir / f"{n}_mnist_cnn") for n in range(3)]
    assert f"best trial {results['best']['number']}" in bad.stdout + bad.stderr


def test_a_stopped_search_gives_its_trial_back_to_run_again(tmp_path):
    from hydra_plugins.decltrain.optuna_sweeper import _given_back_if_stopped, _trials_done

    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize")
    study.tell(study.ask(space), 0.5)
    interrupted = study.ask(space)
    with pytest.raises(SystemExit), _given_back_if_stopped(study, [interrupted]):
        raise SystemExit(143)  # the job stopped by SIGTERM
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert _trials_done(study) == 1  # the interrupted trial does not count
    assert study.ask(space).params == interrupted.params


def test_trials_asked_together_launch_in_runs_of_consecutive_numbers_so_each_folder_is_its_trial_s():
    from types import SimpleNamespace

    from hydra_plugins.decltrain.optuna_sweeper import _numbered_runs

    trials = [SimpleNamespace(number=n) for n in (4, 5, 7, 8, 10)]  # another worker asked for 6 and 9
    assert [[t.number for t in run] for run in _numbered_runs(trials)] == [[4, 5], [7, 8], [10]]


# Optuna calls heartbeats experimental and meant for Study.optimize; the sweeper, which beats for
# itself, silences these warnings the same way.
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                            "ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_only_a_trial_whose_worker_stopped_beating_is_failed_and_run_again(tmp_path):
    """Two workers on one study: the live worker's trial stays running; the dead one's is retried."""
    from hydra_plugins.decltrain.optuna_sweeper import _beating, _retried_when_stale, _trials_done

    storage = optuna_trial.storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=2,
                                   **_retried_when_stale())
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
    dead, live = study.ask(space), study.ask(space)
    storage.record_heartbeat(dead._trial_id)  # its worker was killed after this beat
    with _beating(storage, [live._trial_id], 1):
        time.sleep(3.5)
        optuna.storages.fail_stale_trials(study)
        assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert _trials_done(study) == 0
    assert study.ask(space).params == dead.params


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_finish_its_trials(tmp_path, data_dir):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["-m", "hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "logger=none"]
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    workers = [subprocess.Popen([train_command(), *args, f"hydra.sweep.dir=sweep{n}"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    study = optuna.load_study(study_name="mnist_cnn", storage=storage)
    states = [t.state for t in study.trials]
    assert TrialState.FAIL not in states and TrialState.RUNNING not in states
    assert 2 <= len(states) <= 3  # two workers asking at the same moment may run one trial more
    assert all(any(f"trial {t.number} " in out for out in outputs) for t in study.trials)  # each ran it once

"""`train -m hparams_search=...`: the Optuna sweeper plugin, its search space and pruning."""
from __future__ import annotations

import json

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.decltrain import search_space
from tests.helpers.commands import run_train


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
    """Two good trials, then the search continues (same sweep folder) with a learning rate too
    small to learn: the median pruner stops it after its first of two epochs."""
    env = {"DATA_DIR": str(data_dir)}
    fixed = ("trainer.max_epochs=2", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2",
             "dataset.batch_size=64", "model.hidden=64", "model.dropout_fc=0.1")
    good = run_train("-m", "hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2", "optimizer.lr=3e-3", *fixed,
                     cwd=tmp_path, env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").iterdir()
    bad = run_train("-m", "hparams_search=mnist_optuna", "hydra.sweeper.n_trials=3", "optimizer.lr=1e-7", *fixed,
                    f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, env=env)
    assert bad.returncode == 0, bad.stdout + bad.stderr

    study = optuna.load_study(study_name="mnist_cnn", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert [sorted(t.intermediate_values) for t in trials] == [[1, 2], [1, 2], [1]]
    pruned_dir = sweep_dir / "2_mnist_cnn"
    pruned = json.loads((pruned_dir / "optuna_trial.json").read_text())
    assert (pruned["state"], pruned["pruned_at_epoch"]) == ("pruned", 1)
    assert "pruned after epoch 1" in (pruned_dir / "train.log").read_text()
    assert json.loads((pruned_dir / "metrics.json").read_text())["last"]["epoch"] == 1  # stopped: 1 of 2 epochs
    summary = json.loads((sweep_dir / "summary.json").read_text())  # the continued search's trial, as in any sweep
    assert [(job["number"], job["status"], job["folder"]) for job in summary] == [(2, "pruned", str(pruned_dir))]
    assert "pruned" in (sweep_dir / "summary.txt").read_text()

    results = yaml.safe_load((sweep_dir / "optuna_results.yaml").read_text())
    completed = [t.value for t in trials if t.state == TrialState.COMPLETE]
    assert results["best"]["value"] == pytest.approx(max(completed))
    assert [t["state"] for t in results["trials"]] == ["complete", "complete", "pruned"]
    assert [t["run_dir"] for t in results["trials"]] == [str(sweep_dir / f"{n}_mnist_cnn") for n in range(3)]
    assert f"best trial {results['best']['number']}" in bad.stdout + bad.stderr


def test_a_continued_search_runs_an_interrupted_trial_again(tmp_path):
    from hydra_plugins.decltrain.optuna_sweeper import _requeue_interrupted, _trials_done

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.tell(study.ask({"lr": FloatDistribution(1e-4, 1e-1, log=True)}), 0.5)
    left_running = study.ask({"lr": FloatDistribution(1e-4, 1e-1, log=True)})  # the search stopped here

    continued = optuna.load_study(study_name="s", storage=storage)
    _requeue_interrupted(continued)
    assert [t.state for t in continued.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert _trials_done(continued) == 1  # the interrupted trial does not count
    again = continued.ask({"lr": FloatDistribution(1e-4, 1e-1, log=True)})
    assert again.params == left_running.params

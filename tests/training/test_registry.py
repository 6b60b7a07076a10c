from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from training import registry
from training.registry import compare_with_champion, decide_promotion, find_champion, metric_value


def test_first_version_is_promoted():
    decision = decide_promotion("pr_auc", 0.3, None)
    assert decision.promote and decision.reason == "no champion yet"


@pytest.mark.parametrize(
    ("metric", "challenger", "champion", "promote"),
    [
        ("pr_auc", 0.40, 0.35, True),
        ("pr_auc", 0.35, 0.40, False),
        ("pr_auc", 0.40, 0.40, False),  # a tie does not beat the champion
        ("log_loss", 0.45, 0.50, True),  # lower is better
        ("brier", 0.21, 0.20, False),
    ],
)
def test_promotion_needs_a_strictly_better_score(metric, challenger, champion, promote):
    decision = decide_promotion(metric, challenger, champion, champion_version="4")
    assert decision.promote is promote
    assert decision.champion_score == champion and decision.champion_version == "4"
    assert ("beats" if promote else "does not beat") in decision.reason


def test_metric_value_matches_sklearn():
    from sklearn.metrics import average_precision_score

    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.8, 0.4, 0.3, 0.9])
    assert metric_value("pr_auc", y, p) == average_precision_score(y, p)
    with pytest.raises(ValueError, match="unknown metric"):
        metric_value("accuracy", y, p)


class _ClientWithChampion:
    def get_model_version_by_alias(self, name, alias):
        return SimpleNamespace(version="7")


@pytest.mark.parametrize("promote_when_comparison_fails", [True, False])
def test_a_champion_that_cannot_be_scored_is_decided_by_config(
    monkeypatch, promote_when_comparison_fails
):
    def broken(model_uri, table):
        raise ValueError("input lacks columns the model needs: ['old_feature']")

    monkeypatch.setattr(registry, "score_registered_model", broken)
    decision = compare_with_champion(
        _ClientWithChampion(),
        "churn",
        metric="pr_auc",
        challenger_score=0.4,
        test_table=pd.DataFrame({"x": [1.0]}),
        y_test=np.array([1]),
        promote_when_comparison_fails=promote_when_comparison_fails,
    )
    assert decision.promote is promote_when_comparison_fails
    assert "old_feature" in decision.reason and decision.champion_version == "7"
    assert decision.champion_score is None


class _Registry:
    """A registry client with one model, ``churn``, whose aliases point to versions."""

    def __init__(self, aliases: dict[str, str]):
        self.aliases = aliases
        self.asked: list[tuple[str, str]] = []

    def get_model_version_by_alias(self, name, alias):
        from mlflow.exceptions import MlflowException

        self.asked.append((name, alias))
        if name != "churn" or alias not in self.aliases:
            raise MlflowException(f"no alias {alias!r} on {name!r}")
        return SimpleNamespace(name=name, version=self.aliases[alias])


def test_find_champion_follows_the_champion_alias_and_says_none_when_absent():
    client = _Registry({"champion": "3", "challenger": "4"})
    assert find_champion(client, "churn").version == "3"
    assert client.asked == [("churn", "champion")]
    assert find_champion(client, "churn", alias="challenger").version == "4"
    assert find_champion(client, "upsell") is None  # no such model
    assert find_champion(_Registry({}), "churn") is None  # a model without a champion

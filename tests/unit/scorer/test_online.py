"""The bandit's math: it starts at its prior, learns from residuals, adds increments in any order, and
takes no non-finite value."""

from __future__ import annotations

import numpy as np
import pytest
from routing_fakes import two_clusters

from moai.scorer.benchmark.replay import replay
from moai.scorer.data.routing import RoutingData
from moai.scorer.online import LinearBandit, Observation, features


def _x(seed: int, dim: int = 8) -> np.ndarray:
    return features(np.random.default_rng(seed).normal(size=dim))


def cluster_data(n: int, seed: int, cost: float = np.nan) -> tuple[np.ndarray, np.ndarray, RoutingData]:
    """Return `two_clusters`' embeddings and scores, and the routing data of models a, b, c over them."""
    emb, scores, _ = two_clusters(n, seed=seed)
    data = RoutingData(
        ids=tuple(str(i) for i in range(n)),
        sources=("s",) * n,
        prompts=tuple(f"q{i}" for i in range(n)),
        tasks=("t",) * n,
        models=("a", "b", "c"),
        scores=scores,
        costs=np.full((n, 3), cost),
    )
    return emb, scores, data


def test_a_new_bandit_scores_exactly_its_prior() -> None:
    bandit = LinearBandit(["a", "b"], 9)
    assert bandit.means(_x(0), {"a": 0.7, "b": 0.2}) == {"a": 0.7, "b": 0.2}


def test_outcomes_move_the_estimate_towards_them_at_the_prior_strength() -> None:
    x = _x(1)
    weak, strong = LinearBandit(["a"], 9, prior_strength=1.0), LinearBandit(["a"], 9, prior_strength=100.0)
    for bandit in (weak, strong):
        for _ in range(10):
            bandit.add(Observation("a", x, 0.5, 1.0))
    assert 0.5 < strong.means(x, {"a": 0.5})["a"] < weak.means(x, {"a": 0.5})["a"] <= 1.0


def test_increments_commute_so_processes_lose_nothing() -> None:
    obs = [Observation("a" if i % 2 else "b", _x(i), 0.5, float(i % 3 == 0)) for i in range(30)]
    forward, backward = LinearBandit(["a", "b"], 9), LinearBandit(["a", "b"], 9)
    for o in obs:
        forward.add(o)
    for o in reversed(obs):
        backward.add(o)
    q = _x(99)
    f, b = forward.means(q, {"a": 0.5, "b": 0.5}), backward.means(q, {"a": 0.5, "b": 0.5})
    assert f == pytest.approx(b, abs=1e-9)


def test_hostile_values_never_reach_the_statistics() -> None:
    bandit = LinearBandit(["a"], 9, method="thompson")
    bandit.add(Observation("a", features([np.nan, np.inf, 1, 0, 0, 0, 0, 0]), float("nan"), float("inf")))
    bandit.add(Observation("unknown", _x(0), 0.5, 1.0))
    bandit.add(Observation("a", np.ones(3), 0.5, 1.0))  # wrong size: ignored
    scores = bandit.scores(_x(2), {"a": 0.5, "b": 0.5}, explore=True, rng=np.random.default_rng(0))
    assert all(np.isfinite(v) and v >= 0 for v in scores.values())
    assert bandit.counts == {"a": 1}
    with pytest.raises(ValueError, match="prior_strength"):
        LinearBandit(["a"], 9, prior_strength=0)


def test_exploring_scores_are_optimistic_with_linucb() -> None:
    bandit = LinearBandit(["a"], 9, method="linucb", width=1.0)
    x = _x(3)
    assert bandit.scores(x, {"a": 0.5}, explore=True)["a"] > bandit.scores(x, {"a": 0.5}, explore=False)["a"]


def test_the_replay_learns_which_model_each_cluster_needs() -> None:
    """Two clusters, each answered only by its own model: after 300 queries, the policy recovers most of the gap."""
    emb, scores, data = cluster_data(600, seed=0)
    report, choice = replay(data, emb, explore=0.1, seed=0, checkpoints=(100, 300))
    curve = {p["n"]: p for p in report["curve"]}
    assert curve[300]["rest_gap"] > 0.8
    assert set(report) == {"quality", "explored_share", "shares", "curve", "settings"}
    assert np.mean(scores[np.arange(len(emb)), choice]) == pytest.approx(report["quality"], abs=1e-6)


def test_the_benchmark_reports_the_online_replay_beside_the_offline_methods() -> None:
    from moai.scorer.benchmark.evaluate import METHOD_KEYS, format_table, run_benchmark

    emb, _, data = cluster_data(400, seed=1, cost=0.001)
    train, test = data.subset(np.arange(200)), data.subset(np.arange(200, 400))
    report = run_benchmark(train, test, emb[:200], emb[200:], methods=["best_single", "online"])
    online = report["methods"]["online"]
    assert set(online) == {*METHOD_KEYS, "online"}
    assert online["quality"] == pytest.approx(online["online"]["quality"], abs=1e-6)
    assert online["online"]["curve"][-1]["n"] == 200
    assert "online" in format_table(report)


def test_the_replay_starts_from_a_given_prior() -> None:
    """With a prior that already knows the clusters, the replay routes well from its first query."""
    emb, scores, data = cluster_data(200, seed=2)
    report, _ = replay(data, emb, explore=0.0, priors=scores * 0.8 + 0.1, checkpoints=(20,))
    assert report["curve"][0]["seen_gap"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        replay(data, emb, priors=np.zeros((3, 3)))

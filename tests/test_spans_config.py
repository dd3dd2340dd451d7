import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from sklearn.metrics import f1_score

from falconer_ray.config import RunConfig, merge
from falconer_ray.spans import locate, span_f1


def test_locate_gives_distinct_occurrences():
    doc = "Anna met Bob. Anna left."
    taken = set()
    first, second = locate(doc, "Anna", taken), locate(doc, "Anna", taken)
    assert (first.start, second.start) == (0, 14)
    assert locate(doc, "Anna", taken) is None
    assert locate(doc, "Carl") is None and locate(doc, "  ") is None


@given(st.text(min_size=1, max_size=80), st.data())
def test_located_spans_are_exact_substrings(doc, data):
    i = data.draw(st.integers(0, len(doc) - 1))
    j = data.draw(st.integers(i + 1, len(doc)))
    span = locate(doc, doc[i:j])
    if doc[i:j].strip():
        assert span is not None and doc[span.start:span.end] == doc[i:j] and span.start <= i


def test_span_f1_matches_scikit_learn_on_a_shared_index():
    pred = [[(0, 4), (9, 12)], [], [(3, 5)]]
    gold = [[(0, 4)], [(1, 2)], [(3, 5)]]
    universe = sorted({(d, s) for d, doc in enumerate(pred) for s in doc} | {(d, s) for d, doc in enumerate(gold) for s in doc})
    y_pred = [int(s in pred[d]) for d, s in universe]
    y_true = [int(s in gold[d]) for d, s in universe]
    assert span_f1(pred, gold) == pytest.approx(f1_score(y_true, y_pred))
    assert span_f1([[]], [[]]) == 1.0


def test_config_merge_and_validation():
    cfg = merge(RunConfig(), {"train.epochs": 3, "mine.jsonl": True, "limit": None})
    assert cfg.train.epochs == 3 and cfg.mine.jsonl and cfg.limit is None
    with pytest.raises(ValidationError):
        merge(RunConfig(), {"train.epochs": 0})
    with pytest.raises(ValidationError):
        RunConfig.model_validate({"unknown_setting": 1})


def test_call_size_gives_every_actor_several_calls():
    from falconer_ray.mine.driver import CALLS_PER_ACTOR, MIN_DOCS_PER_CALL, call_size

    cfg = RunConfig()
    default = cfg.mine.docs_per_call()
    assert call_size(cfg, 1_000_000, 2) == default  # a big corpus keeps the hardware default
    small = call_size(cfg, 1000, 2)
    assert small < default and -(-1000 // small) >= CALLS_PER_ACTOR * 2
    assert call_size(cfg, 10, 8) == MIN_DOCS_PER_CALL  # never calls of a handful of documents
    assert call_size(cfg, 0, 2) == default  # unknown size: the default
    assert call_size(merge(cfg, {"mine.batch_size": 700}), 1000, 2) == 700  # set by the user: kept
    gpu = merge(cfg, {"mine.gpus_per_actor": 1})
    assert call_size(gpu, 10_000_000, 4) == gpu.mine.docs_per_call() > default  # a GPU idles between calls: fewer, larger ones


def test_set_pool_bounds_hold_whatever_is_up_and_unset_ones_fill_it():
    """A cold autoscaling cluster (no worker up) still gets the pool it asked for, so the
    waiting actors make the autoscaler add nodes; unset bounds take what is up."""
    from falconer_ray.mine.driver import pool_size

    cfg = RunConfig()
    assert pool_size(cfg, {"CPU": 8.0}) == (8, 8)
    assert pool_size(cfg, {}) == (1, 1)  # a head without worker CPUs: one actor
    assert pool_size(merge(cfg, {"mine.actors": 32}), {"CPU": 2.0}) == (2, 32)  # grows as nodes come
    assert pool_size(merge(cfg, {"mine.actors": 32, "mine.min_actors": 4}), {"CPU": 2.0}) == (4, 32)
    assert pool_size(merge(cfg, {"mine.actors": 3}), {"CPU": 8.0}) == (3, 3)
    gpu = merge(cfg, {"mine.gpus_per_actor": 1, "mine.actors": 8})
    assert pool_size(gpu, {"CPU": 16.0}) == (1, 8)  # --gpu on a cluster with no GPU node up yet
    assert pool_size(merge(cfg, {"mine.gpus_per_actor": 0.5}), {"GPU": 2.0}) == (4, 4)
    assert pool_size(merge(cfg, {"mine.cpus_per_actor": 2}), {"CPU": 7.0}) == (3, 3)


def test_unset_gpu_settings_follow_the_cluster_and_set_ones_hold(ray_local):
    from falconer_ray.ray_env import cluster_gpus, with_gpus

    cfg = RunConfig()
    assert cfg.train.use_gpu is None and cfg.mine.gpus_per_actor is None  # unset: decided when Ray is up
    here = with_gpus(cfg)  # this machine's Ray: no GPU up, no cluster config declaring any
    assert cluster_gpus() == 0 and here.train.use_gpu is False and here.mine.gpus_per_actor == 0.0
    found = with_gpus(cfg, gpus=8)
    assert found.train.use_gpu is True and found.mine.gpus_per_actor == 1.0
    chosen = merge(cfg, {"train.use_gpu": False, "mine.gpus_per_actor": 0.5})
    assert with_gpus(chosen, gpus=8) == chosen  # a flag or a config file wins
    assert with_gpus(merge(cfg, {"train.use_gpu": False}), gpus=8).mine.gpus_per_actor == 1.0

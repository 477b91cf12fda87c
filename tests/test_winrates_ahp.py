import itertools
import warnings

import numpy as np
import pytest

from taskonomy.analysis.affinities import compute_affinities
from taskonomy.analysis.ahp import (
    ahp_weights,
    consistency_index,
    consistent_tournament,
    ratio_matrix,
)
from taskonomy.analysis.losses_table import SampleKeyWarning, align_losses
from taskonomy.analysis.records import RunRecord
from taskonomy.analysis.winrates import (
    pairwise_win_rates,
    sign_flip_p_value,
    significantly_better,
    tournament,
    win_margin,
)


def _losses(rng, offsets, n=80):
    keys = [f"b{i // 10}-p{i}" for i in range(n)]
    return {name: dict(zip(keys, rng.random(n) + off, strict=True))
            for name, off in offsets.items()}


# ------------------------------------------------------------------------------------------- AHP
@pytest.mark.parametrize("seed", range(5))
def test_ahp_on_consistent_matrix_returns_its_weights(seed):
    rng = np.random.default_rng(seed)
    strengths = rng.uniform(0.5, 3.0, size=7)  # ratios stay inside the clip range
    weights = ahp_weights(consistent_tournament(strengths))
    np.testing.assert_allclose(weights, strengths / strengths.sum(), rtol=1e-10)
    assert consistency_index(consistent_tournament(strengths)) < 1e-10


def test_ahp_is_invariant_to_candidate_order():
    rng = np.random.default_rng(1)
    losses = rng.random((6, 200)) + rng.random((6, 1))
    w = pairwise_win_rates(losses)
    base = ahp_weights(w)
    for perm in itertools.islice(itertools.permutations(range(6)), 0, 720, 97):
        p = np.array(perm)
        np.testing.assert_allclose(ahp_weights(w[np.ix_(p, p)]), base[p], rtol=1e-10)


def test_ahp_clips_before_the_ratio_and_sums_to_one():
    w = np.array([[0.5, 1.0, 1.0], [0.0, 0.5, 0.7], [0.0, 0.3, 0.5]])
    ratios = ratio_matrix(w)
    assert ratios[0, 1] == pytest.approx(0.999 / 0.001)
    np.testing.assert_allclose(ratios * ratios.T, 1.0)
    weights = ahp_weights(w)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[0] > weights[1] > weights[2] > 0


def test_ahp_of_an_inconsistent_tournament_is_the_principal_eigenvector_of_its_odds():
    # a beats b 60 %, c 80 %; b beats c 70 %: odds 1.5, 4 and 7/3 (1.5 · 7/3 ≠ 4).
    w = np.array([[0.5, 0.6, 0.8], [0.4, 0.5, 0.7], [0.2, 0.3, 0.5]])
    odds = np.array([[1, 1.5, 4], [1 / 1.5, 1, 7 / 3], [1 / 4, 3 / 7, 1]])
    vector = np.ones(3)
    for _ in range(200):  # power iteration, independent of the eigen-solver used
        vector = odds @ vector
        vector /= vector.sum()
    np.testing.assert_allclose(ahp_weights(w), vector, rtol=1e-9)
    # Saaty's index (λ_max − n) / (n − 1), λ_max from the same iteration.
    largest = float((odds @ vector)[0] / vector[0])
    assert consistency_index(w) == pytest.approx((largest - 3) / 2, rel=1e-9)
    assert consistency_index(w) > 1e-4  # inconsistent, if mildly


@pytest.mark.parametrize("seed", range(3))
def test_ahp_of_a_large_random_tournament_is_the_perron_vector(seed):
    # Twelve candidates with arbitrary win rates: the eigen-solver must pick the Perron root
    # (the largest eigenvalue), not another eigenvector that happens to look larger.
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.uniform(0.0, 1.0, (12, 12)), 1)
    w = upper + np.tril(1.0 - upper.T, -1) + 0.5 * np.eye(12)
    odds = ratio_matrix(w)
    vector = np.ones(12)
    for _ in range(2000):
        vector = odds @ vector
        vector /= vector.sum()
    np.testing.assert_allclose(ahp_weights(w), vector, rtol=1e-7)


def test_a_diverged_candidate_is_refused_not_counted_as_ties():
    rng = np.random.default_rng(2)
    losses = _losses(rng, {"self": 0.0, "reshading": 0.5, "random": 1.0}, n=20)
    losses["reshading"] = {key: float("nan") for key in losses["reshading"]}
    with pytest.raises(ValueError, match="'normal': reshading have NaN or inf per-image"):
        tournament("normal", losses)
    with pytest.raises(ValueError, match=r"candidate row\(s\) \[1\] hold NaN"):
        pairwise_win_rates(np.array([[0.1, 0.2], [np.nan, 0.3]]))


def test_ahp_rejects_non_tournaments():
    with pytest.raises(ValueError, match="square"):
        ahp_weights(np.ones((2, 3)) * 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ahp_weights(np.array([[0.5, 1.5], [-0.5, 0.5]]))


# ------------------------------------------------------------------------------------ win rates
def test_win_rates_known_answer_where_a_tie_wins_nothing():
    losses = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 1.0, 5.0]])
    w = pairwise_win_rates(losses)
    # image 1: 1 < 2 win; image 2: tie; image 3: loss; image 4: win → (1 + 0 + 0 + 1) / 4
    assert w[0, 1] == pytest.approx(2 / 4)
    assert w[1, 0] == pytest.approx(1 / 4)
    np.testing.assert_allclose(np.diag(w), 0.5)


def test_images_where_every_candidate_ties_leave_the_affinities_unchanged():
    rng = np.random.default_rng(0)
    losses = rng.random((4, 50)) + np.arange(4)[:, None] * 0.2
    # e.g. images without a valid label, where every candidate's loss is 0
    tied = np.concatenate([losses, np.zeros((4, 30))], axis=1)
    np.testing.assert_allclose(ahp_weights(pairwise_win_rates(tied)),
                               ahp_weights(pairwise_win_rates(losses)), atol=1e-9)


def test_quality_and_gain_on_planted_losses():
    keys = [f"k{i}" for i in range(10)]
    self_l = dict(zip(keys, np.full(10, 1.0), strict=True))
    # transfer "a" beats self on exactly 3 images and pixels on exactly 8
    a = dict(zip(keys, [0.5] * 3 + [2.0] * 7, strict=True))
    pixels = dict(zip(keys, [3.0] * 8 + [0.1] * 2, strict=True))
    rand = dict(zip(keys, np.full(10, 9.0), strict=True))
    t = tournament("normal", {"a": a, "random": rand, "self": self_l, "pixels": pixels})
    frame = t.frame().set_index("candidate")
    assert "pixels" not in frame.index  # a reference, never a candidate
    assert frame.loc["a", "quality"] == pytest.approx(0.3)
    assert frame.loc["a", "gain"] == pytest.approx(0.8)
    assert frame.loc["self", "quality"] == pytest.approx(0.5)
    assert frame.loc["random", "quality"] == 0.0
    assert frame["affinity"].sum() == pytest.approx(1.0)
    assert frame["affinity"].idxmax() == "self" and frame["affinity"].idxmin() == "random"


def test_a_tie_with_pixels_is_no_gain():
    # Gain counts images where a candidate's loss is strictly below pixels' (spec §4.2).
    keys = [f"k{i}" for i in range(6)]
    same = dict.fromkeys(keys, 0.0)
    t = tournament("normal", {"a": same, "b": dict.fromkeys(keys, 1.0), "pixels": dict(same)})
    assert t.gain[t.candidates.index("a")] == 0.0


def test_bootstrap_intervals_are_ordered_at_every_level():
    # The interval of level L spans the (1−L)/2 and 1−(1−L)/2 quantiles of the draws.
    rng = np.random.default_rng(8)
    losses = _losses(rng, {"a": 0.1, "b": 0.3, "random": 1.0, "self": 0.0, "pixels": 0.5})
    narrow = tournament("normal", losses, bootstrap=200, seed=1, level=0.02)
    wide = tournament("normal", losses, bootstrap=200, seed=1, level=0.98)
    for name in ("affinity", "quality", "gain"):
        (low, high), (wide_low, wide_high) = narrow.ci[name], wide.ci[name]
        assert np.all(low <= high) and np.all(wide_low <= low) and np.all(high <= wide_high)


def test_bootstrap_intervals_contain_the_estimate():
    rng = np.random.default_rng(3)
    losses = _losses(rng, {"a": 0.1, "b": 0.3, "random": 1.0, "self": 0.0, "pixels": 0.5})
    t = tournament("depth_zbuffer", losses, bootstrap=200, seed=1)
    for name, estimate in (("affinity", t.affinity), ("quality", t.quality), ("gain", t.gain)):
        low, high = t.ci[name]
        assert np.all(low <= estimate + 1e-12) and np.all(estimate <= high + 1e-12)
    low, high = t.ci["affinity"]
    assert np.all(high - low > 0)
    # the same seed gives the same intervals
    again = tournament("depth_zbuffer", losses, bootstrap=200, seed=1)
    np.testing.assert_array_equal(again.ci["affinity"][0], low)


def test_bootstrap_without_pixels_or_self_gives_undefined_intervals_quietly():
    rng = np.random.default_rng(4)
    losses = _losses(rng, {"a": 0.1, "b": 0.3, "random": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "All-NaN slice" for every target
        t = tournament("normal", losses, bootstrap=20)
    assert np.isnan(t.ci["gain"][0]).all() and np.isnan(t.ci["quality"][1]).all()
    assert np.isfinite(t.ci["affinity"][0]).all()


def test_mismatched_keys_warn_with_counts_or_raise_in_strict_mode():
    rng = np.random.default_rng(0)
    losses = _losses(rng, {"a": 0.1, "self": 0.0})
    losses["a"] = dict(list(losses["a"].items())[:70])  # "a" lacks 10 images
    with pytest.warns(SampleKeyWarning, match="70 of 80 sample keys.*a lacks 10"):
        aligned = align_losses(losses)
    assert aligned.losses.shape == (2, 70) and aligned.n_dropped == 10
    with pytest.raises(ValueError, match="a lacks 10"):
        align_losses(losses, strict=True)
    # One key short is still a mismatch; no shared key at all is an error, not an empty table.
    with pytest.warns(SampleKeyWarning) as caught:
        one_short = align_losses({"a": {"k1": 1.0, "k2": 2.0}, "b": {"k1": 3.0}})
    assert one_short.missing == {"b": 1} and len(caught) == 1
    with pytest.raises(ValueError, match="no key is shared"):
        align_losses({"a": {"x": 1.0}, "b": {"y": 2.0}})
    # Keys come out sorted whatever their order (a bootstrap over them is reproducible).
    names = [f"img{i:02d}" for i in range(50)]
    shuffled = list(np.random.default_rng(0).permutation(names))
    aligned = align_losses({"a": dict.fromkeys(shuffled, 1.0), "b": dict.fromkeys(names, 2.0)})
    assert aligned.keys == tuple(names)


def test_images_pixels_lacks_leave_the_tournament_whole():
    # pixels is only the gain's reference: its missing images shrank every candidate's
    # comparison (affinities moved by up to 0.12 with half of them missing).
    rng = np.random.default_rng(5)
    losses = _losses(rng, {"a": 0.1, "b": 0.3, "random": 1.0, "self": 0.0, "pixels": 0.5})
    whole = tournament("normal", {k: v for k, v in losses.items() if k != "pixels"})
    kept = list(losses["pixels"])[:40]
    partial = {**losses, "pixels": {k: losses["pixels"][k] for k in kept}}
    with pytest.warns(SampleKeyWarning, match="'pixels' lacks 40 of the tournament's 80 images"):
        t = tournament("normal", partial, bootstrap=50)
    assert t.n_images == 80 and t.gain_images == 40
    np.testing.assert_array_equal(t.affinity, whole.affinity)
    a = t.candidates.index("a")
    expected = np.mean([losses["a"][k] < losses["pixels"][k] for k in kept])
    assert t.gain[a] == expected and np.isfinite(t.ci["gain"][0]).all()
    low, high = t.ci["gain"]  # each draw's gain is a share of the images pixels has
    assert np.all(low <= t.gain + 1e-12) and np.all(t.gain <= high + 1e-12)
    with pytest.raises(ValueError, match="'pixels' lacks 40"):
        tournament("normal", partial, strict=True)
    with pytest.raises(ValueError, match="same test split"):
        tournament("normal", {**losses, "pixels": {"elsewhere": 1.0}})


# -------------------------------------------------------------------------- records → affinities
def _record(run_id, role, target, sources, losses, regime="16k"):
    return RunRecord(run_id=run_id, role=role, target=target, sources=sources, regime=regime,
                     status="finished", per_image_losses=losses, finished_at="2026-01-01T00:00:00")


def test_affinities_from_records_recover_planted_ranking():
    rng = np.random.default_rng(7)
    offsets = {"a": 0.05, "b": 0.2, "c": 0.6, "a+b": 0.0, "random": 1.5, "self": -0.1,
               "pixels": 0.4}
    recs = []
    for target in ("normal", "depth_zbuffer"):
        for name, loss in _losses(rng, offsets, n=300).items():
            if name in ("random", "pixels"):
                recs.append(_record(f"{target}-{name}", "baseline", target, (name,), loss))
            elif name == "self":
                recs.append(_record(f"{target}-task", "task", target, (), loss, regime="full"))
            else:
                srcs = tuple(name.replace("a", "normal").replace("b", "reshading")
                             .replace("c", "edge_texture").split("+"))
                recs.append(_record(f"{target}-{name}", "transfer", target, srcs, loss))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_affinities(recs)
    table = result.table
    assert table.targets() == ["depth_zbuffer", "normal"]
    assert table.normalization_error().max() < 1e-9
    ranking = list(table.candidates("normal")["sources"])
    assert ranking[0] == "self" and ranking[-1] == "random"
    assert ranking.index("normal") < ranking.index("reshading") < ranking.index("edge_texture")
    matrix = table.first_order_matrix()
    assert set(matrix.index) >= {"normal", "reshading", "edge_texture"}
    orders = dict(zip(table.frame["sources"], table.frame["order"], strict=False))
    assert orders["normal+reshading"] == 2 and orders["self"] == 0


def test_requested_target_without_transfers_lists_missing_pairs():
    rng = np.random.default_rng(0)
    loss = _losses(rng, {"x": 0.0})["x"]
    recs = [_record("t1", "transfer", "normal", ("reshading",), loss),
            _record("t2", "baseline", "normal", ("random",), loss)]
    with pytest.raises(ValueError, match="reshading → depth_zbuffer"):
        compute_affinities(recs, targets=["depth_zbuffer"])
    with pytest.raises(ValueError, match="valid task names: .*normal"):
        compute_affinities(recs, targets=["not_a_task"])


def test_released_affinities_rank_candidates_nearly_as_their_quality_does():
    """A check of the shipped data (quality and affinity of one candidate on one row), not of AHP.

    The released data has each candidate's win rate vs self only, not the full tournament, so
    their AHP cannot be rerun. If the tournament were consistent (Bradley–Terry), strength
    a_i ∝ q_i / (1 - q_i) with q_i the win rate vs self, and AHP would return weights ∝ a: the
    same order as q. The authors' affinities should rank candidates nearly so. (Our AHP itself
    is checked by the known-answer tests above.)
    """
    from scipy.stats import spearmanr

    from taskonomy.analysis.affinity_table import load_affinities

    table = load_affinities("paper-2018-16k")
    rank_agreement = []
    for target in table.targets():
        rows = table.candidates(target)
        q = np.clip(rows["quality"].to_numpy(), 0.001, 0.999)
        weights = ahp_weights(consistent_tournament(q / (1 - q)))
        rank_agreement.append(spearmanr(weights, rows["affinity"]).statistic)
    assert len(rank_agreement) == 22
    assert np.median(rank_agreement) > 0.9


def test_duplicate_runs_use_the_latest_and_self_prefers_the_baseline_record():
    from taskonomy.analysis.affinities import DuplicateRunWarning, candidate_records

    rng = np.random.default_rng(4)
    loss = _losses(rng, {"a": 0.0, "b": 1.0, "c": 0.5, "d": 0.2})
    old = _record("old", "transfer", "normal", ("reshading",), loss["a"])
    new = RunRecord.from_dict({**old.to_dict(), "run_id": "new",
                               "finished_at": "2026-02-01T00:00:00",
                               "per_image_losses": loss["b"]})
    task = _record("task", "task", "normal", (), loss["c"], regime="full")
    self_baseline = _record("self16k", "baseline", "normal", ("self",), loss["d"])
    with pytest.warns(DuplicateRunWarning, match="using 'new', ignoring old"):
        found = candidate_records([old, new, task], "normal", "16k")
    assert found["reshading"].run_id == "new" and found["self"].run_id == "task"
    found = candidate_records([new, task, self_baseline], "normal", "16k")
    assert found["self"].run_id == "self16k"
    # The task network of the full data is self, also when a later run trained on less.
    later = RunRecord.from_dict({**task.to_dict(), "run_id": "task16k", "regime": "16k",
                                 "finished_at": "2026-03-01T00:00:00"})
    assert candidate_records([new, task, later], "normal", "16k")["self"].run_id == "task"


def test_a_target_without_its_self_or_pixels_baseline_is_named():
    from taskonomy.analysis.affinities import MissingBaselineWarning

    loss = _losses(np.random.default_rng(5), {"x": 0.0, "z": 1.0})
    recs = [_record("n-r", "transfer", "normal", ("reshading",), loss["x"]),
            _record("n-self", "baseline", "normal", ("self",), loss["z"])]
    with pytest.warns(MissingBaselineWarning, match="1 baseline run\\(s\\) are missing: "
                                                    "pixels → normal; .*its gain"):
        result = compute_affinities(recs)
    assert result.table.frame["gain"].isna().all()


def test_requested_target_with_gaps_warns_with_the_missing_pairs():
    from taskonomy.analysis.affinities import MissingTransferWarning

    rng = np.random.default_rng(0)
    loss = _losses(rng, {"x": 0.0, "y": 0.5, "z": 1.0})
    recs = [_record("n-r", "transfer", "normal", ("reshading",), loss["x"]),
            _record("n-rand", "baseline", "normal", ("random",), loss["z"]),
            _record("d-n", "transfer", "depth_zbuffer", ("normal",), loss["y"])]
    # No study here transfers a task into itself: normal → normal is not missing. A source
    # seen only in another regime is not missing from this one either.
    other_regime = _record("n-e", "transfer", "depth_zbuffer", ("edge_texture",), loss["y"],
                           regime="1k")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingTransferWarning)
        result = compute_affinities([*recs, other_regime], targets=["normal"], regime="16k")
    assert result.table.targets() == ["normal"]
    recs.append(_record("d-d", "transfer", "depth_zbuffer", ("depth_zbuffer",), loss["z"]))
    with pytest.warns(MissingTransferWarning, match="2 first-order transfers are missing for "
                      "the requested targets: depth_zbuffer → normal, normal → normal;"):
        compute_affinities(recs, targets=["normal"])


def test_transfers_on_a_since_retrained_source_are_named():
    from taskonomy.analysis.affinities import StaleSourceWarning, stale_transfers

    rng = np.random.default_rng(2)
    loss = _losses(rng, {"x": 0.0, "y": 0.5, "z": 1.0})
    old_task = _record("reshading-old", "task", "reshading", (), loss["x"], regime="full")
    new_task = RunRecord.from_dict({**old_task.to_dict(), "run_id": "reshading-new",
                                    "finished_at": "2026-02-01T00:00:00"})
    transfer = RunRecord.from_dict({
        **_record("n-r", "transfer", "normal", ("reshading",), loss["x"]).to_dict(),
        "config": {"source_runs": {"reshading": {"run_id": "reshading-old",
                                                 "fingerprint": "abc"}}}})
    recs = [old_task, transfer, _record("n-rand", "baseline", "normal", ("random",), loss["z"]),
            _record("n-task", "task", "normal", (), loss["y"], regime="full"),
            _record("n-self", "baseline", "normal", ("self",), loss["y"]),
            _record("n-pix", "baseline", "normal", ("pixels",), loss["z"])]
    assert stale_transfers(recs) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_affinities(recs)
    assert [(r.run_id, task, old, now) for r, task, old, now in stale_transfers(
        [*recs, new_task])] == [("n-r", "reshading", "reshading-old", "reshading-new")]
    with pytest.warns(StaleSourceWarning, match="n-r \\(reshading: trained on reshading-old, "
                                                "latest reshading-new\\)"):
        compute_affinities([*recs, new_task])


def test_a_source_trained_further_under_its_run_id_makes_its_transfers_stale():
    from taskonomy.analysis.affinities import stale_transfers

    loss = _losses(np.random.default_rng(3), {"x": 0.0})
    task = _record("reshading-a", "task", "reshading", (), loss["x"], regime="full")
    read = {"reshading": {"run_id": "reshading-a", "fingerprint": "weights:0123456789ab"}}
    transfer = RunRecord.from_dict({
        **_record("n-r", "transfer", "normal", ("reshading",), loss["x"]).to_dict(),
        "config": {"source_runs": read}})

    def task_with(fingerprint: str | None) -> RunRecord:
        config = {} if fingerprint is None else {"encoder_fingerprint": fingerprint}
        return RunRecord.from_dict({**task.to_dict(), "config": config})

    # Unknown on either side (older records): not stale; same weights: not stale.
    assert stale_transfers([task_with(None), transfer]) == []
    by_path = RunRecord.from_dict({**transfer.to_dict(), "config": {"source_runs": {
        "reshading": {"run_id": "reshading-a", "fingerprint": "/runs/last.ckpt|1712345678"}}}})
    assert stale_transfers([task_with("weights:fedcba987654"), by_path]) == []
    assert stale_transfers([task_with("weights:0123456789ab"), transfer]) == []
    assert [(t, old, now) for _, t, old, now in stale_transfers(
        [task_with("weights:fedcba987654"), transfer])] == [
        ("reshading", "reshading-a (weights 01234567)",
         "reshading-a (weights fedcba98, trained further)")]


# ------------------------------------------------------------------------ significance of a win
def test_win_margin_is_a_sign_test_whose_error_counts_clusters_not_images():
    a = np.zeros(100)
    b = np.where(np.arange(100) < 75, 1.0, -1.0)  # a wins 75 images, loses 25
    clusters = np.arange(100) // 25  # four buildings: a wins three whole ones
    margin, image_error = win_margin(a, b)
    assert margin == pytest.approx(0.5)
    assert image_error == pytest.approx(np.sqrt(100 / 99 * 75 / 100**2))
    assert significantly_better(a, b)  # 100 independent images: clear
    margin, building_error = win_margin(a, b, clusters)
    assert building_error == pytest.approx(0.5)  # four draws: no evidence
    assert not significantly_better(a, b, clusters)
    assert not significantly_better(b, a)


def test_sign_flip_test_is_exact_over_few_clusters_and_holds_its_level():
    # Two buildings won outright: p = 2 / 2**2, never significant (a normal test says it is).
    assert sign_flip_p_value([0, 0], [1, 1], ["x", "y"]) == 0.5
    assert not significantly_better([0, 0], [1, 1], ["x", "y"])
    # Four buildings, three won: 10 of the 16 flips are as extreme.
    a, b = np.zeros(100), np.where(np.arange(100) < 75, 1.0, -1.0)
    assert sign_flip_p_value(a, b, np.arange(100) // 25) == pytest.approx(10 / 16)
    # 20 buildings all won: random flips (beyond 16 clusters) give p near 2 / 2**20.
    assert sign_flip_p_value(np.zeros(40), np.ones(40), np.arange(40) // 2) < 1e-3
    # Under the null, with building effects, it rejects about 5 % of the time (24 buildings).
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(24), 15)
    rejected = 0
    for _ in range(200):
        scene = np.repeat(rng.normal(0, 1, 24), 15)
        x, y = scene + rng.normal(0, 1, 360), rng.normal(0, 1, 360)  # same law, own images
        rejected += sign_flip_p_value(x, y, clusters, draws=2000) < 0.05
    assert rejected / 200 < 0.1
    # every image its own cluster (many of them): random flips in bounded blocks
    assert sign_flip_p_value(np.zeros(3000), np.ones(3000), draws=1000) == pytest.approx(1 / 1001)
    with pytest.raises(ValueError, match="finite"):
        sign_flip_p_value([0.0, np.nan], [1.0, 1.0])


def test_win_margin_ties_count_for_neither_side():
    a = np.array([1.0, 1.0, 0.0, 2.0])
    b = np.array([1.0, 1.0, 1.0, 1.0])
    assert win_margin(a, b)[0] == 0.0
    assert win_margin(a[:1], b[:1], ["x"])[1] == np.inf  # one cluster: no error estimate
    with pytest.raises(ValueError, match="clusters must label every image"):
        win_margin(a, b, ["x"])

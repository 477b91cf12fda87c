"""Records → affinities: the data regime analyzed, and finished records without losses."""

import warnings

import numpy as np
import pandas as pd
import pytest

from taskonomy.analysis.affinities import NoLossesWarning, compute_affinities
from taskonomy.analysis.records import RunRecord, read_records, write_record

TASKS = ("normal", "reshading", "edge_texture")
#: Later than every 1k record: were regimes mixed up, the 16k records would win as the latest.
FINISHED = {"1k": "2026-01-01T00:00:00", "16k": "2026-02-01T00:00:00"}


def _record(run_id, role, target, sources, losses, regime, finished_at=None):
    return RunRecord(run_id=run_id, role=role, target=target, sources=sources, regime=regime,
                     status="finished", per_image_losses=losses,
                     finished_at=finished_at or FINISHED.get(regime, FINISHED["1k"]))


def _losses(rng, offset, n=8):
    return {f"b0-p{i}": float(v) for i, v in enumerate(rng.random(n) * 0.2 + offset)}


def _regime_records(regime, seed):
    """Transfers from the two other tasks, random and pixels baselines, for every target.

    The two regimes rank the transfers oppositely, so their tables differ.
    """
    rng = np.random.default_rng(seed)
    records = []
    for i, target in enumerate(TASKS):
        others = [s for s in TASKS if s != target]
        first, second = (0.2, 0.5) if regime == "1k" else (0.5, 0.2)
        for source, offset in zip(others, (first, second), strict=True):
            records.append(_record(f"{regime}-{target}--{source}", "transfer", target,
                                   (source,), _losses(rng, offset + 0.01 * i), regime))
        records.append(_record(f"{regime}-{target}--random", "baseline", target, ("random",),
                               _losses(rng, 1.5), regime))
        records.append(_record(f"{regime}-{target}--pixels", "baseline", target, ("pixels",),
                               _losses(rng, 0.8), regime))
    return records


def _task_records():
    rng = np.random.default_rng(99)
    return [_record(f"{t}--task", "task", t, (), _losses(rng, 0.0), "full") for t in TASKS]


def _runs(tmp_path, records):
    """Write the records to a runs folder and read them back, as `taskonomy analyze` does."""
    runs = tmp_path / "runs"
    for record in records:
        write_record(record, runs)
    return read_records(runs)


def _affinities(records, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean set of records: no warning of any kind
        return compute_affinities(records, **kwargs)


def test_several_regimes_and_none_chosen_is_an_error_naming_them(tmp_path):
    records = _runs(tmp_path, _regime_records("1k", 0) + _regime_records("16k", 1)
                    + _task_records())
    with pytest.raises(ValueError, match="several data regimes") as error:
        compute_affinities(records)
    assert "'1k'" in str(error.value) and "'16k'" in str(error.value)
    assert "--regime" in str(error.value)
    # Task runs are trained on the full data and are no regime of their own: one transfer
    # regime beside them needs no choice.
    assert _affinities([r for r in records if r.regime != "16k"]).regime == "1k"


@pytest.mark.parametrize(("regime", "other"), [("1k", "16k"), ("16k", "1k")])
def test_a_chosen_regime_gives_the_affinities_of_its_records_alone(tmp_path, regime, other):
    records = _runs(tmp_path, _regime_records("1k", 0) + _regime_records("16k", 1)
                    + _task_records())
    mixed = _affinities(records, regime=regime)
    alone = _affinities([r for r in records if r.regime != other])
    assert mixed.regime == alone.regime == regime
    pd.testing.assert_frame_equal(mixed.table.frame, alone.table.frame)
    for target in TASKS:
        np.testing.assert_array_equal(mixed.tournaments[target].affinity,
                                      alone.tournaments[target].affinity)
        assert mixed.tournaments[target].candidates == alone.tournaments[target].candidates
        assert {r.regime for r in mixed.records[target].values()} == {regime, "full"}
    # The regimes rank the transfers oppositely: a mixed-up regime could not pass the above.
    other_table = _affinities(records, regime=other).table.frame
    assert not np.allclose(mixed.table.frame["affinity"], other_table["affinity"])


def test_finished_records_without_losses_warn_and_are_left_out(tmp_path):
    clean = _regime_records("1k", 0) + _task_records()
    empty = [
        # a candidate of its own, otherwise absent
        _record("1k-edge_texture--normal+reshading", "transfer", "edge_texture",
                ("normal", "reshading"), {}, "1k"),
        # a later rerun of an existing candidate: it would win as the latest
        _record("1k-normal--reshading-rerun", "transfer", "normal", ("reshading",), {}, "1k",
                finished_at="2026-03-01T00:00:00"),
    ]
    records = _runs(tmp_path, clean + empty)
    assert {r.run_id for r in records if not r.per_image_losses} == {r.run_id for r in empty}
    with pytest.warns(NoLossesWarning, match="2 finished run") as caught:
        result = compute_affinities(records)
    message = " ".join(str(w.message) for w in caught if w.category is NoLossesWarning)
    assert all(r.run_id in message for r in empty)
    expected = _affinities(_runs(tmp_path / "clean", clean))
    pd.testing.assert_frame_equal(result.table.frame, expected.table.frame)
    assert "normal+reshading" not in set(result.table.frame["sources"])
    assert result.records["normal"]["reshading"].run_id == "1k-normal--reshading"

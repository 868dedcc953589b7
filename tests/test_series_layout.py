"""The `tolerance.series/1` layout: written, read back by name, refused when malformed."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from tolerance._errors import FormatError
from tolerance.compare.series import (META_KEY, SCHEMA, RowSeries, read_series,
                                      series_arrays)
from tolerance.io import write_npz


def _rows():
    rng = np.random.default_rng(0)
    return [
        RowSeries(a="haswell", b="prescott", key="z_b", bound={"atol": 1e-7},
                  max_abs=rng.random(5), over=np.array([3, 0, 1, 2, 9]), status="fail",
                  onset=0, margin=rng.random(5) * 10),
        RowSeries(a="haswell", b="prescott", key="omega_b",
                  bound={"atol": None, "rtol": 1e-12, "ulp": None},
                  max_abs=np.zeros(5), over=np.zeros(5, dtype=np.int64)),
    ]


def test_round_trip_by_the_names_in_meta(tmp_path):
    rows = _rows()
    path = tmp_path / "series.npz"
    write_npz(path, series_arrays(rows, steps_axis=0))
    # the layout as a plain NumPy reader sees it: meta is JSON bytes, arrays named there
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(f[META_KEY].tobytes().decode())
        assert f[META_KEY].dtype == np.uint8
        assert meta["schema"] == SCHEMA and meta["steps_axis"] == 0
        first = meta["rows"][0]
        assert (first["a"], first["b"], first["key"], first["onset"]) == \
            ("haswell", "prescott", "z_b", 0)
        assert first["bound"] == {"atol": 1e-7, "rtol": None, "ulp": None}
        assert np.array_equal(f[first["arrays"]["max_abs"]], rows[0].max_abs)
        assert np.array_equal(f[first["arrays"]["step"]], np.arange(5))
        assert f[first["arrays"]["over"]].dtype == np.int64
        assert "margin" not in meta["rows"][1]["arrays"]
    back = read_series(path)
    assert back.steps_axis == 0 and back.keys() == ["z_b", "omega_b"]
    for got, want in zip(back.rows, rows):
        assert (got.a, got.b, got.key, got.status, got.onset) == \
            (want.a, want.b, want.key, want.status, want.onset)
        assert np.array_equal(got.max_abs, want.max_abs)
        assert np.array_equal(got.over, want.over)
        assert np.array_equal(got.step, want.step)
    assert np.array_equal(back.rows[0].margin, rows[0].margin)
    assert back.rows[1].margin is None


def test_rows_of_unequal_lengths_are_refused():
    with pytest.raises(ValueError, match="over has 2 steps"):
        RowSeries(a="a", b="b", key="k", bound={}, max_abs=np.zeros(3), over=np.zeros(2))


def _write_raw(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in members.items():
            with zf.open(name + ".npy", "w") as fh:
                np.lib.format.write_array(fh, np.asarray(arr), allow_pickle=False)


def _meta(obj):
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


@pytest.mark.parametrize("members, match", [
    ({"a__b__k__max_abs": np.zeros(3)}, "meta: missing"),
    ({META_KEY: np.zeros(3)}, "1-D uint8"),
    ({META_KEY: np.frombuffer(b"{nope", dtype=np.uint8)}, "not JSON"),
    ({META_KEY: _meta({"schema": "tolerance.series/0", "rows": []})}, "schema"),
    ({META_KEY: _meta({"schema": SCHEMA, "rows": {}})}, "rows must be a list"),
    ({META_KEY: _meta({"schema": SCHEMA, "rows": [{"a": "x"}]})}, r"rows\[0\]\.b"),
    ({META_KEY: _meta({"schema": SCHEMA, "rows": [
        {"a": "x", "b": "y", "key": "k", "status": "pass", "bound": {"atol": "1"},
         "arrays": {}}]})}, r"bound\.atol"),
    ({META_KEY: _meta({"schema": SCHEMA, "rows": [
        {"a": "x", "b": "y", "key": "k", "status": "pass", "bound": {},
         "arrays": {"step": "s", "max_abs": "m", "over": "o"}}]}),
      "s": np.arange(3), "m": np.zeros(3)}, r"o: missing \(named by rows\[0\]\.arrays\.over\)"),
    ({META_KEY: _meta({"schema": SCHEMA, "rows": [
        {"a": "x", "b": "y", "key": "k", "status": "pass", "bound": {},
         "arrays": {"step": "s", "max_abs": "m", "over": "o"}}]}),
      "s": np.arange(3), "m": np.zeros(3), "o": np.zeros(4, dtype=np.int64)}, "4 steps"),
    ({META_KEY: _meta({"schema": SCHEMA, "rows": [
        {"a": "x", "b": "y", "key": "k", "status": "pass", "bound": {},
         "arrays": {"step": "s", "max_abs": "m", "over": "o"}}]}),
      "s": np.arange(3), "m": np.zeros((3, 1)), "o": np.zeros(3, dtype=np.int64)}, "1-D float64"),
])
def test_malformed_files_name_the_file_and_key(tmp_path, members, match):
    path = tmp_path / "bad.npz"
    _write_raw(path, members)
    with pytest.raises(FormatError, match=match) as exc:
        read_series(path)
    assert str(path) in str(exc.value)

"""Contract suite for array backends: parquet, table and memory, on DuckDB (and PostgreSQL).

:class:`ArrayBackendContract` holds every test; each subclass supplies the
``backends`` fixture (a real catalog with its array backend), the way Dagster's
``TestRunStorage`` is subclassed per storage.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from n4a_store.arrays.lazy import LazyArrays, materialize_all
from n4a_store.config import DuckDBStoreConfig, parse_to_config
from n4a_store.errors import InvalidInputError

PG_URL = os.environ.get("N4A_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _open(config):
    backends = config.open_backends(lock_timeout=10.0, idle_release=0.2)
    backends.catalog.open_schema()
    return backends


def regression(pid: str, dataset: str = "wheat", n: int = 5) -> dict:
    rng = np.random.default_rng(abs(hash(pid)) % 2**32)
    return {"prediction_id": pid, "dataset_name": dataset, "y_true": rng.normal(size=n),
            "y_pred": rng.normal(size=n), "sample_indices": np.arange(n) * 2,
            "weights": rng.uniform(size=n)}


def classification(pid: str, dataset: str = "coffee") -> dict:
    return {"prediction_id": pid, "dataset_name": dataset,
            "y_true": np.array(["Brazil", "Ethiopia", "Kenya"]),
            "y_pred": np.array(["Brazil", "Brazil", "Kenya"]),
            "y_proba": np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]])}


def assert_same_arrays(got: dict, want: dict) -> None:
    for key in ("y_true", "y_pred", "y_proba", "sample_indices", "weights"):
        a, b = got[key], want.get(key)
        if b is None:
            assert a is None, key
            continue
        b = np.asarray(b)
        assert a.shape == b.shape, key
        if b.dtype.kind in "OUS":
            assert a.dtype == object and a.tolist() == b.tolist(), key
        else:
            np.testing.assert_array_equal(a, b, err_msg=key)


class ArrayBackendContract:
    """Tests every array backend must pass."""

    __test__ = False

    @pytest.fixture
    def backends(self, tmp_path):  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture
    def arrays(self, backends):
        return backends.arrays

    def test_save_batch_roundtrip_keeps_dtypes_shapes_and_labels(self, arrays):
        records = [regression("r1"), regression("r2"), classification("c1")]
        arrays.save_batch(records)
        got = arrays.load_batch(["r2", "missing", "r1"], "wheat")
        assert [r["prediction_id"] for r in got] == ["r2", "r1"]
        assert_same_arrays(got[0], records[1])
        assert got[0]["y_true"].dtype == np.float64
        assert got[0]["sample_indices"].dtype == np.int64
        c1 = arrays.load("c1", "coffee")
        assert_same_arrays(c1, records[2])
        assert c1["y_proba"].shape == (3, 3) and c1["weights"] is None
        assert arrays.load("c1", "wheat") is None
        assert arrays.exists("r1", "wheat") and not arrays.exists("nope", "wheat")

    def test_same_records_as_the_parquet_backend(self, arrays, tmp_path):
        from n4a_store.arrays.store import ArrayStore

        reference = ArrayStore(tmp_path / "reference")
        records = [regression("r1"), classification("c1", "wheat"),
                   {"prediction_id": "i1", "dataset_name": "wheat", "y_true": [1, 2, 3],
                    "y_pred": [1.5, 2.5, 2.0], "y_proba": [0.1, 0.2, 0.3]}]
        arrays.save_batch(records)
        reference.save_batch(records)
        mine = arrays.load_batch(["r1", "c1", "i1"], "wheat")
        theirs = reference.load_batch(["r1", "c1", "i1"], "wheat")
        for a, b in zip(mine, theirs, strict=True):
            for key in ("y_true", "y_pred", "y_proba", "sample_indices", "weights"):
                if b[key] is None:
                    assert a[key] is None
                else:
                    assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape
                    assert a[key].tolist() == b[key].tolist()

    def test_invalid_batch_writes_nothing(self, arrays):
        bad = dict(regression("bad"), y_pred=np.zeros(2))
        with pytest.raises(InvalidInputError, match="y_pred has 2"):
            arrays.save_batch([regression("ok"), bad])
        assert arrays.list_keys("wheat") == []

    def test_keys_datasets_stats_delete(self, arrays):
        arrays.save_batch([regression("a"), regression("b"), regression("z", "corn")])
        assert sorted(arrays.list_keys("wheat")) == ["a", "b"]
        assert arrays.list_datasets() == ["corn", "wheat"]
        assert {d: s["rows"] for d, s in arrays.stats().items()} == {"corn": 1, "wheat": 2}
        arrays.delete(["a", "z"])
        assert arrays.list_keys("wheat") == ["b"]
        assert arrays.load("a", "wheat") is None
        arrays.compact()
        assert arrays.list_keys("corn") == []
        stats = arrays.stats()
        assert stats["wheat"]["rows"] == 1 and stats["wheat"]["tombstoned"] == 0
        # the Parquet backend may keep an empty file for a dataset compacted to nothing
        assert stats.get("corn", {"rows": 0})["rows"] == 0

    def test_stage_inside_a_failed_transaction_leaves_nothing(self, backends):
        arrays, catalog = backends.arrays, backends.catalog
        with pytest.raises(RuntimeError, match="boom"):
            with catalog.writing() as s:
                staged = arrays.stage([regression("s1")], s)
                assert set(staged.refs) == {"s1"}
                try:
                    raise RuntimeError("boom")
                except RuntimeError:
                    staged.discard()
                    raise
        assert arrays.load("s1", "wheat") is None
        with catalog.writing() as s:
            staged = arrays.stage([regression("s2")], s)
        assert_same_arrays(arrays.load_ref("s2", "wheat", staged.refs["s2"]), regression("s2"))

    def test_lazy_arrays_load_on_first_access_and_in_one_batch(self, arrays):
        arrays.save_batch([regression("a"), regression("b")])
        one = LazyArrays(arrays, "a", "wheat")
        assert not one.loaded
        np.testing.assert_array_equal(one["y_pred"], regression("a")["y_pred"])
        assert one.loaded and one.data["prediction_id"] == "a"
        items = [LazyArrays(arrays, pid, "wheat") for pid in ("b", "a", "gone")]
        materialize_all(items)
        assert all(i.loaded for i in items)
        assert items[2].data is None and len(items[2]) == 0
        assert_same_arrays(items[0].data, regression("b"))


class DuckDBBackends:
    """Fixture: a DuckDB workspace using the class's array backend."""

    kind = "parquet"

    @pytest.fixture
    def backends(self, tmp_path):
        backends = _open(DuckDBStoreConfig(root=str(tmp_path / "ws"), arrays=self.kind))
        yield backends
        backends.catalog.close()


class TestParquetOnDuckDB(DuckDBBackends, ArrayBackendContract):
    __test__ = True
    kind = "parquet"


class TestTableOnDuckDB(DuckDBBackends, ArrayBackendContract):
    __test__ = True
    kind = "table"


class TestMemoryOnDuckDB(DuckDBBackends, ArrayBackendContract):
    __test__ = True
    kind = "memory"


def postgres_store_uri(tmp_path: Path):
    """Yield a store URI on a fresh PostgreSQL database; drop it afterwards.

    Skips when ``n4a_store.catalog.postgres`` is absent or the server does not
    answer (fails instead when ``N4A_REQUIRE_POSTGRES=1``).
    """
    try:
        import n4a_store.catalog.postgres  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL catalog not available")
    import psycopg

    required = os.environ.get("N4A_REQUIRE_POSTGRES") == "1"
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if required:
            pytest.fail(f"PostgreSQL required but not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"n4a_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE DATABASE {name}")
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}?file_root={tmp_path / 'files'}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


class PostgresBackends:
    """Fixture: a PostgreSQL catalog (fresh database) using the class's array backend."""

    kind = "parquet"

    @pytest.fixture
    def backends(self, tmp_path):
        for uri in postgres_store_uri(tmp_path):
            backends = _open(parse_to_config(uri, arrays=self.kind))
            try:
                yield backends
            finally:
                backends.catalog.close()


class TestParquetOnPostgres(PostgresBackends, ArrayBackendContract):
    __test__ = True
    kind = "parquet"


class TestTableOnPostgres(PostgresBackends, ArrayBackendContract):
    __test__ = True
    kind = "table"


class TestMemoryOnPostgres(PostgresBackends, ArrayBackendContract):
    __test__ = True
    kind = "memory"


# -- through the WorkspaceStore: the seed's two-step path and lazy arrays ---------------------

def _store(uri_or_path):
    pytest.importorskip("n4a_store.workspace.commit", reason="WorkspaceStore modules not in this tree")
    from n4a_store import WorkspaceStore

    return WorkspaceStore(uri_or_path)


def _two_step(store) -> list[str]:
    """Scores through save_prediction (no arrays), arrays through array_store.save_batch."""
    run_id = store.begin_run("exp", {}, [{"name": "wheat"}])
    pipeline_id = store.begin_pipeline(run_id, "p", {}, [], "wheat", "h")
    ids = [store.save_prediction(pipeline_id, None, "wheat", "PLS", "PLSRegression", str(fold), "val",
                                 0.1, 0.2, 0.3, "rmse", "regression", 5, 3, {}, {}, None, None, 0, 0.0)
           for fold in range(2)]
    store.complete_pipeline(pipeline_id, 0.1, 0.2, "rmse", 1)
    store.array_store.save_batch([regression(pid) | {"prediction_id": pid} for pid in ids])
    return ids


@pytest.mark.parametrize("arrays", ["parquet", "table", "memory"])
def test_two_step_path_and_lazy_arrays_through_the_store(tmp_path, arrays):
    store = _store(f"file://{tmp_path / 'ws'}?arrays={arrays}")
    try:
        assert store.array_store.kind == arrays
        ids = _two_step(store)
        record = store.get_prediction(ids[0], load_arrays=True)
        assert_same_arrays(record, regression(ids[0]))
        lazy = store.lazy_arrays(store.query_predictions(dataset_name="wheat"))
        assert set(lazy) == set(ids) and not any(v.loaded for v in lazy.values())
        materialize_all(lazy.values())
        for pid in ids:
            assert_same_arrays(lazy[pid].data, regression(pid))
    finally:
        store.close()

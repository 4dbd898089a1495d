"""Store configs and URIs: parsing, serialisation, scoping, collections, custom schemes, secrets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from n4a_store import (
    DuckDBStoreConfig,
    InvalidInputError,
    PostgresStoreConfig,
    StoreConfig,
    WorkspaceStore,
    create_store,
    parse_to_config,
)
from n4a_store.config import LocatorInfo, StoreBackends
from pg_support import postgres_database


def test_paths_and_file_uris_are_duckdb_workspaces(tmp_path):
    for location in (str(tmp_path / "ws"), tmp_path / "ws", (tmp_path / "ws").as_uri()):
        config = parse_to_config(location)
        assert isinstance(config, DuckDBStoreConfig)
        assert config.path == (tmp_path / "ws").resolve()
    with create_store(str(tmp_path / "ws")) as store:
        assert store.backend == "duckdb"
        assert (tmp_path / "ws" / "store.duckdb").is_file()
    assert parse_to_config(str(tmp_path / "ws")).exists()


def test_config_round_trips_through_dict(tmp_path):
    config = DuckDBStoreConfig(root=str(tmp_path), workspace="exp-1", arrays="parquet")
    data = config.to_dict()
    assert data["_type"] == "file" and data["workspace"] == "exp-1"
    assert StoreConfig.from_dict(data) == config
    pg = parse_to_config(f"postgresql://u:pw@db.example:5433/lab?file_root={tmp_path}&workspace=w1")
    assert StoreConfig.from_dict(pg.to_dict()) == pg
    assert parse_to_config(pg.to_uri()) == pg
    with pytest.raises(InvalidInputError, match="_type"):
        StoreConfig.from_dict({"root": "x"})


def test_passwords_never_show(tmp_path):
    config = parse_to_config(f"postgresql://lab:s3cret@db.example/lab?file_root={tmp_path}")
    assert isinstance(config, PostgresStoreConfig)
    for text in (repr(config), str(config), config.display_uri()):
        assert "s3cret" not in text and "***" in text
    with pytest.raises(InvalidInputError) as error:
        parse_to_config("postgresql://lab:s3cret@db.example/lab")
    assert "file_root" in str(error.value) and "s3cret" not in str(error.value)


def test_bad_locations_are_refused_clearly(tmp_path):
    with pytest.raises(InvalidInputError, match="unknown store URI scheme 's3'"):
        parse_to_config("s3://bucket/ws")
    with pytest.raises(InvalidInputError, match="workspace name"):
        DuckDBStoreConfig(root=str(tmp_path)).scoped("../escape")
    with pytest.raises(InvalidInputError, match="array backend"):
        parse_to_config(f"{tmp_path.as_uri()}?arrays=floppy")
    with pytest.raises(InvalidInputError, match="unknown parameter"):
        parse_to_config(f"{tmp_path.as_uri()}?colour=red")
    with pytest.raises(InvalidInputError, match="not a directory"):
        (tmp_path / "file").write_text("x")
        WorkspaceStore(tmp_path / "file")


def test_duckdb_collection_lists_and_opens_its_workspaces(tmp_path):
    collection = DuckDBStoreConfig(root=str(tmp_path / "lab"))
    for name in ("wheat", "coffee"):
        with collection.for_workspace(name).connect() as store:
            store.begin_run(name, {}, [])
    assert collection.list_workspaces() == ["coffee", "wheat"]
    with collection.for_workspace("wheat").connect() as store:
        assert store.list_runs()["name"].to_list() == ["wheat"]
    with pytest.raises(InvalidInputError, match="scoped"):
        collection.scoped("wheat").list_workspaces()


def test_postgres_collection_is_one_schema_per_workspace(tmp_path):
    with postgres_database() as url:
        collection = parse_to_config(f"{url}?file_root={tmp_path}")
        for name in ("wheat", "coffee"):
            with collection.for_workspace(name).connect() as store:
                assert store.backend == "postgresql"
                store.begin_run(name, {}, [])
        assert collection.list_workspaces() == ["coffee", "wheat"]
        with create_store(url, file_root=str(tmp_path), workspace="coffee") as store:
            assert store.list_runs()["name"].to_list() == ["coffee"]
            assert store.workspace_path == (tmp_path / "coffee").resolve()
        assert not collection.exists()  # nothing in the unscoped (public) schema


def test_a_users_config_class_registers_its_scheme(tmp_path):
    opened: list[str] = []

    @dataclass(frozen=True, kw_only=True, repr=False)
    class LabShareConfig(StoreConfig):
        """A lab's own scheme: labshare://<name> maps onto a DuckDB workspace in a share."""

        scheme: ClassVar[str] = "labshare"
        share: str

        def _inner(self) -> DuckDBStoreConfig:
            return DuckDBStoreConfig(root=self.share, workspace=self.workspace)

        def to_uri(self) -> str:
            return f"labshare://{self.workspace}"

        def open_backends(self, *, lock_timeout: float, idle_release: float) -> StoreBackends:
            opened.append(self.workspace or "")
            return self._inner().open_backends(lock_timeout=lock_timeout, idle_release=idle_release)

        def exists(self) -> bool:
            return self._inner().exists()

        def _list_workspaces(self) -> list[str]:
            return DuckDBStoreConfig(root=self.share).list_workspaces()

        @classmethod
        def from_locator(cls, info: LocatorInfo, **kwargs: Any) -> "LabShareConfig":
            return cls(share=kwargs.pop("share"), workspace=info.host, **kwargs)

    with create_store("labshare://nir2026", share=str(tmp_path)) as store:
        store.begin_run("r", {}, [])
    assert opened == ["nir2026"]
    assert (tmp_path / "nir2026" / "store.duckdb").is_file()
    assert isinstance(StoreConfig.from_dict({"_type": "labshare", "share": str(tmp_path),
                                             "workspace": "x"}), LabShareConfig)


def test_cli_accepts_a_store_uri(tmp_path):
    from click.testing import CliRunner

    from n4a_store.cli import main

    with postgres_database() as url:
        uri = f"{url}?file_root={tmp_path}"
        with WorkspaceStore(uri) as store:
            store.begin_run("from-uri", {}, [])
        result = CliRunner().invoke(main, ["runs", "--workspace", uri, "--json"])
        assert result.exit_code == 0, result.output
        assert "from-uri" in result.output
        missing = CliRunner().invoke(main, ["runs", "--workspace", f"{uri}&workspace=nosuch"])
        assert missing.exit_code == 1 and "no workspace" in missing.output


def test_old_duckdb_workspace_is_migrated_to_array_references(tmp_path, fitted, regression_data):
    """A version-1 catalog (Parquet file and row columns) opens as version 2 with its arrays."""
    import duckdb

    from conftest import write_pipeline

    workspace = tmp_path / "old"
    with WorkspaceStore(workspace) as store:
        ids = write_pipeline(store, store.begin_run("r", {}, []), fitted, regression_data)
    con = duckdb.connect(str(workspace / "store.duckdb"))
    con.execute("ALTER TABLE predictions ADD COLUMN array_file VARCHAR")
    con.execute("ALTER TABLE predictions ADD COLUMN array_row INTEGER")
    con.execute("UPDATE predictions SET array_file = split_part(array_ref, '#', 1), "
                "array_row = CAST(split_part(array_ref, '#', 2) AS INTEGER)")
    con.execute("ALTER TABLE predictions DROP COLUMN array_ref")
    con.execute("DROP TABLE prediction_arrays")
    con.execute("UPDATE schema_info SET value = '1' WHERE key = 'version'")
    con.close()
    with WorkspaceStore(workspace) as store:
        record = store.get_prediction(ids["prediction_ids"][0], load_arrays=True)
        assert record["y_pred"] is not None and "array_file" not in record
    con = duckdb.connect(str(workspace / "store.duckdb"), read_only=True)
    assert con.execute("SELECT value FROM schema_info").fetchone()[0] == "2"
    assert con.execute("SELECT count(*) FROM predictions WHERE array_ref LIKE 'part-%#%'").fetchone()[0] == 9
    con.close()

"""Artifact files are replaced whole, even when two writers save the same file at once."""

from __future__ import annotations

import os
import threading

import yaml

from wildtrack.model.artifacts import load_model_config, save_model_config


def test_concurrent_saves_of_one_config_never_collide_or_leave_temp_files(tmp_path):
    path = tmp_path / "model_config.yaml"
    configs = [{"writer": w, "padding": "x" * 20_000} for w in range(6)]
    errors: list[BaseException] = []

    def write(config: dict) -> None:
        try:
            for _ in range(30):
                save_model_config(config, path)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in configs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert yaml.safe_load(path.read_text()) in configs  # one writer's file, whole
    assert load_model_config(path)["writer"] in range(6)
    assert [p.name for p in tmp_path.iterdir()] == ["model_config.yaml"]
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # permissions as a plain open() gives

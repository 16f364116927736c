"""The sweep's state files (``sweep.json``, ``trial-result.json``) are replaced whole or not at all."""

from __future__ import annotations

import json

import pytest

from imascl_ray.tune import files


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sweep.json"
    files.write_json_atomically(path, {"name": "first"})
    files.write_json_atomically(path, {"name": "second", "trials": [1, 2]})
    assert json.loads(path.read_text()) == {"name": "second", "trials": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]  # no temporary file left


def test_an_interrupted_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "trial-result.json"
    files.write_json_atomically(path, {"val/mean/acc": 0.5, "final": 1})
    before = path.read_bytes()

    def dump_half_then_die(data, handle, **kwargs):
        handle.write('{"val/mean/acc": 0.')  # part of the new file is written ...
        handle.flush()
        raise KeyboardInterrupt  # ... when the process is interrupted

    monkeypatch.setattr(files.json, "dump", dump_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        files.write_json_atomically(path, {"val/mean/acc": 0.9, "final": 1})
    assert path.read_bytes() == before
    assert json.loads(path.read_text()) == {"val/mean/acc": 0.5, "final": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["trial-result.json"]


def test_the_sweep_and_the_trials_write_their_state_files_through_it():
    """The callers use the atomic writer (a plain ``write_text`` there would bring the bug back)."""
    import inspect

    from imascl_ray.tune import sweep, trainable

    assert "write_json_atomically(directory / STATE_FILE" in inspect.getsource(sweep.run_sweep)
    assert "write_json_atomically(done" in inspect.getsource(trainable.run_trial)

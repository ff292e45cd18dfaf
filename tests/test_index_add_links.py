"""``wildtrack index add`` over a catalogue folder holding a link to a photo elsewhere: that one file is skipped
with a line naming it, the rest are added."""

from __future__ import annotations

import shutil

from _serve_helpers import build_gallery


def test_a_link_outside_the_data_root_is_skipped_and_named(synth_data, tiny_artifacts, tmp_path, caplog):
    from typer.testing import CliRunner

    from wildtrack.cli import app
    from wildtrack.index import GalleryIndex

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    build_gallery(data, tiny_artifacts, tmp_path / "index")
    before = len(GalleryIndex.load(tmp_path / "index"))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    photos = sorted((synth_data / "t002").glob("*.jpg"))
    shutil.copy(photos[0], outside / "far.jpg")
    (data / "t001" / "linked.jpg").symlink_to(outside / "far.jpg")
    shutil.copy(photos[1], data / "t001" / "new.jpg")
    with open(data / "metadata.csv", "a", encoding="utf-8") as meta:
        meta.write("t001/linked.jpg,t001,2024-02-01,t001_e9\n")
        meta.write("t001/new.jpg,t001,2024-02-01,t001_e9\n")

    result = CliRunner().invoke(app, ["index", "add", "--index", str(tmp_path / "index"),
                                      "--artifacts", str(tiny_artifacts)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "None" not in output
    assert "far.jpg" in output or "linked.jpg" in output
    assert "outside the catalogue's data root" in output
    after = GalleryIndex.load(tmp_path / "index")
    assert len(after) == before + 1
    assert "t001/new.jpg" in {r.path for r in after.rows}

"""The generated field card: what `wildtrack survey` is tested and demonstrated on."""

from __future__ import annotations

from collections import Counter

import pytest
from PIL import Image

from wildtrack.data.synth.card import generate_card, write_truth
from wildtrack.images import DATETIME_ORIGINAL, EXIF_IFD


def test_a_card_is_a_flat_folder_of_camera_files_with_capture_times(tmp_path):
    card = tmp_path / "card"
    photos = generate_card(card, known=[0, 1, 2], unknown=[7], photos_per_encounter=2, image_size=64)
    assert sorted(p.name for p in card.iterdir()) == [p.file for p in photos]
    kinds = Counter(p.kind for p in photos)
    assert kinds == {"turtle": 10, "no_turtle": 1, "duplicate": 1, "unreadable": 1}
    turtle = [p for p in photos if p.kind == "turtle"]
    with Image.open(card / turtle[0].file) as img:
        assert img.getexif().get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == turtle[0].taken.strftime("%Y:%m:%d %H:%M:%S")
    # the unknown turtle is met twice; the last two known turtles within one minute, photos interleaved
    assert len({p.encounter for p in turtle if p.identity == "t007"}) == 2
    t1 = sorted((p.taken, p.identity) for p in turtle if p.identity in ("t001", "t002"))
    assert [i for _, i in t1] == ["t001", "t002", "t001", "t002"]
    assert (t1[-1][0] - t1[0][0]).total_seconds() < 60
    dup = next(p for p in photos if p.kind == "duplicate")
    assert (card / dup.file).read_bytes() == (card / turtle[0].file).read_bytes()
    truth = write_truth(tmp_path / "truth.csv", photos).read_text().splitlines()
    assert truth[0] == "file,identity,encounter,taken,kind" and len(truth) == len(photos) + 1


def test_the_same_seed_gives_the_same_card_and_a_used_folder_is_refused(tmp_path):
    a = generate_card(tmp_path / "a", known=[0, 1], photos_per_encounter=1, image_size=48, extras=False)
    b = generate_card(tmp_path / "b", known=[0, 1], photos_per_encounter=1, image_size=48, extras=False)
    assert a == b
    assert all((tmp_path / "a" / p.file).read_bytes() == (tmp_path / "b" / p.file).read_bytes() for p in a)
    with pytest.raises(ValueError, match="not empty"):
        generate_card(tmp_path / "a", known=[0])

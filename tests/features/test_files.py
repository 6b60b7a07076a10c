import stat

import pytest

from features.files import write_atomically


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "risk_list.csv"
    target.write_text("old\n")

    def fail_midway(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(target, fail_midway)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["risk_list.csv"]  # no temp file left


def test_written_files_are_readable_by_others(tmp_path):
    target = write_atomically(tmp_path / "out" / "t.txt", lambda p: p.write_text("x"))
    assert target.read_text() == "x"
    assert target.stat().st_mode & stat.S_IROTH

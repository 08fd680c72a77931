"""``sparsebench compare`` over targets whose labels would tie: one machine, one axis value, run
directories of one folder name (``x1/run``, ``x3/run``) or one directory given twice."""
from __future__ import annotations

from reports.compare import build_compare
from reports.compare_page import build_compare_html
from tests.test_compare import make_run, standard


def test_targets_of_one_folder_name_get_unique_labels_and_keep_their_flags(tmp_path):
    a = make_run(tmp_path / "x1" / "run", standard(method="estimated"))
    b = make_run(tmp_path / "x3" / "run", standard(method="measured", version="0.2.0"), version="0.2.0")
    c = build_compare([a, b])
    assert [t.label for t in c.targets] == ["auto · 1 thread (x1/run)", "auto · 1 thread (x3/run)"]
    assert c.energy_methods_differ and c.versions_differ
    energy = next(f for f in c.flags if "Energy methods differ" in f)
    assert "auto · 1 thread (x1/run): estimated; auto · 1 thread (x3/run): measured" in energy
    version = next(f for f in c.flags if "different sparsebench versions" in f)
    assert "(x1/run): 0.1.0; auto · 1 thread (x3/run): 0.2.0" in version
    html = build_compare_html([a, b])
    assert "Energy methods differ between targets" in html and "different sparsebench versions" in html


def test_one_directory_given_twice_gets_two_labels(tmp_path):
    a = make_run(tmp_path / "x1" / "run", standard())
    c = build_compare([a, a])
    assert [t.label for t in c.targets] == ["auto · 1 thread (x1/run)", "auto · 1 thread (x1/run) #2"]
    assert not c.flags  # one run: nothing differs
    other = make_run(tmp_path / "b", standard(threads=2))
    assert [t.label for t in build_compare([a, other]).targets] == ["auto · 1 thread", "auto · 2 threads"]  # no tie: no suffix

"""BENCHMARKS.md sections (benchmarks/common.py): a script rewrites its own section and leaves
the others, so that one family's study does not erase another's."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_section  # noqa: E402


def test_a_section_is_rewritten_in_place_and_the_others_stay(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nhand-written text\n")
    write_section("tuning", "## Tuning", md)
    write_section("tuning-room", "### room\nfirst study", md)
    write_section("tuning-street", "### street\nits study", md, after="tuning")
    text = md.read_text()
    # a new section goes just after the one named, else at the end
    assert text.index("### street") < text.index("### room")
    write_section("tuning-room", "### room\nsecond study", md, after="tuning-street")
    text = md.read_text()
    assert "second study" in text and "first study" not in text
    assert "its study" in text and "hand-written text" in text
    assert text.count("<!-- tuning-room:start -->") == 1


def test_a_new_section_whose_anchor_is_missing_goes_at_the_end(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n<!-- other:start -->\nx\n<!-- other:end -->\n")
    write_section("tuning-room", "### room", md, after="tuning-street")
    text = md.read_text()
    assert text.rstrip().endswith("<!-- tuning-room:end -->")
    assert text.index("<!-- other:end -->") < text.index("### room")

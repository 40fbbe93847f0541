"""Every configuration of the golden grid gives the summary recorded before (bit for bit).

A change that means to move results re-records them (``python -m tests.golden_grid --record``)
and says which and why in its commit; any other difference is a regression (issue #23)."""

import json

import pytest

from tests.golden_grid import CASES, GOLDEN_FILE, summary_of

GOLDEN = json.loads(GOLDEN_FILE.read_text())


def test_the_golden_file_holds_every_case():
    assert sorted(GOLDEN) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_summary_is_unchanged(name):
    got, want = summary_of(name), GOLDEN[name]
    changed = {k: (want.get(k), got.get(k)) for k in sorted(set(got) | set(want))
               if got.get(k) != want.get(k)}
    assert not changed, f"{name}: (recorded, now) {changed}"

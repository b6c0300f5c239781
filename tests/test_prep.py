"""common/prep.py: the tokenizer pool keeps a bounded number of chunks in flight."""
from __future__ import annotations

import multiprocessing as mp

from common.prep import bounded_imap


def test_bounded_imap_keeps_order_and_reads_ahead_at_most_its_window() -> None:
    consumed = []

    def items():
        for i in range(50):
            consumed.append(i)
            yield -i

    with mp.get_context("fork").Pool(2) as pool:
        results = bounded_imap(pool, abs, items(), ahead=4)
        for k, value in enumerate(results, start=1):
            assert value == k - 1  # input order
            assert len(consumed) <= k + 3  # never more than `ahead` items submitted and not yet taken
    assert len(consumed) == 50

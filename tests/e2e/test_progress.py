"""A foreground crm_sync.sync() reports progress as NOTICEs while it runs."""

import re

from conftest import create_sf_source

LINE = re.compile(r"^sf\.account: (\d+) records in (\d+) pages, [\d.]+ MB, \d+ records/s, (\d+)% of (\d+), about \d+ s left$")


def slow_sync(db, sf):
    """Sync all 3,000 accounts in pages of 200, each page answered after 150 ms."""
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    sf.fault(path_contains="/query/", skip=0, count=0, kind="latency", latency_ms=150)
    db.execute("SELECT * FROM crm_sync.sync('sf', 'account', full_refresh => true)")
    sf.clear_faults()
    return notices


def test_progress_notices_while_a_sync_pages(db, sf_factory):
    sf = sf_factory("--accounts", "3000")
    create_sf_source(db, sf, batch_size=200, bulk_api=False)
    db.execute("SET crm_sync.progress_interval_ms = 400")
    lines = [LINE.match(n) for n in slow_sync(db, sf) if n.startswith("sf.account:")]
    assert len(lines) >= 2, lines
    assert all(lines), "every progress NOTICE names counts, rate, percent and time left"
    records = [int(m.group(1)) for m in lines]
    assert records == sorted(records) and records[0] < records[-1]
    total = int(lines[0].group(4))
    assert 2900 < total <= 3000
    assert all(0 < int(m.group(3)) <= 100 for m in lines)


def test_no_progress_notices_when_turned_off_or_filtered(db, sf_factory):
    sf = sf_factory("--accounts", "3000")
    create_sf_source(db, sf, batch_size=200, bulk_api=False)
    db.execute("SET crm_sync.progress_interval_ms = 0")
    assert not [n for n in slow_sync(db, sf) if n.startswith("sf.account:")]
    db.execute("SET crm_sync.progress_interval_ms = 200")
    db.execute("SET client_min_messages = warning")
    assert not [n for n in slow_sync(db, sf) if n.startswith("sf.account:")]
    db.execute("RESET client_min_messages")
    assert [n for n in slow_sync(db, sf) if n.startswith("sf.account:")], "the same sync, unfiltered, reports"

"""SessionBook without a clock: every call gets its ``now`` (monotonic seconds) explicitly.

Local bookkeeping (reservations, running sessions, setup rate, expiry) and what other instances
hold (remote figures, set by the Redis sync) summed into the figures a decision reads.
"""

from __future__ import annotations

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocs.charging.sessions import SessionBook

ACCOUNT = 7
OTHER = 8


# --- local and remote figures ------------------------------------------------------------------


def test_a_new_book_holds_nothing() -> None:
    book = SessionBook()
    assert book.reserved(ACCOUNT) == 0
    assert book.active_sessions(ACCOUNT) == 0
    assert book.setups_in_window(ACCOUNT, 0.0) == 0
    assert book.remote_figures(ACCOUNT) == (0, 0)
    assert book.local_figures(ACCOUNT) == (0, 0)


def test_reserved_and_sessions_are_local_plus_remote() -> None:
    book = SessionBook()
    book.admit("auth-1", ACCOUNT, 500, now=0.0, ttl_s=30)
    book.start("acct-1", ACCOUNT, now=1.0, ttl_s=600)  # claims auth-1's 500
    book.reserve("acct-1", ACCOUNT, 700, now=2.0, ttl_s=600)
    assert book.local_figures(ACCOUNT) == (700, 1)
    book.set_remote("b", ACCOUNT, 1_000, 2)
    book.set_remote("c", ACCOUNT, 300, 1)
    assert book.remote_figures(ACCOUNT) == (1_300, 3)
    assert book.reserved(ACCOUNT) == 2_000
    assert book.active_sessions(ACCOUNT) == 4
    # Only remote figures for an account this instance knows nothing about.
    book.set_remote("b", OTHER, 50, 0)
    assert (book.reserved(OTHER), book.active_sessions(OTHER)) == (50, 0)
    assert book.local_figures(OTHER) == (0, 0)


def test_an_instance_announcement_replaces_what_it_held() -> None:
    book = SessionBook()
    book.set_remote("b", ACCOUNT, 1_000, 2)
    book.set_remote("b", ACCOUNT, 400, 1)
    assert book.remote_figures(ACCOUNT) == (400, 1)
    book.set_remote("c", ACCOUNT, 100, 1)
    book.set_remote("b", ACCOUNT, 0, 0)
    assert book.remote_figures(ACCOUNT) == (100, 1)
    book.set_remote("c", ACCOUNT, 0, 0)
    assert book.remote_figures(ACCOUNT) == (0, 0)
    assert book.remote_account_count == 0
    assert book.remote_instances() == []


def test_a_zero_from_an_unknown_instance_is_ignored() -> None:
    book = SessionBook()
    book.set_remote("b", ACCOUNT, 0, 0)
    assert book.remote_instances() == []


def test_forgetting_an_instance_drops_all_it_held_and_nothing_else() -> None:
    book = SessionBook()
    book.set_remote("b", ACCOUNT, 1_000, 2)
    book.set_remote("b", OTHER, 10, 1)
    book.set_remote("c", ACCOUNT, 5, 1)
    assert sorted(book.remote_instances()) == ["b", "c"]
    assert book.forget_instance("b") == 2
    assert book.remote_figures(ACCOUNT) == (5, 1)
    assert book.remote_figures(OTHER) == (0, 0)
    assert book.forget_instance("b") == 0
    assert book.remote_instances() == ["c"]


def test_clearing_remote_figures_leaves_the_local_ones() -> None:
    book = SessionBook()
    book.start("s", ACCOUNT, now=0.0, ttl_s=60)
    book.set_remote("b", ACCOUNT, 1_000, 2)
    book.clear_remote()
    assert book.active_sessions(ACCOUNT) == 1
    assert book.reserved(ACCOUNT) == 0
    assert book.remote_instances() == []


def test_remote_figures_survive_local_expiry_of_the_account() -> None:
    book = SessionBook()
    book.set_remote("b", ACCOUNT, 10, 1)
    book.admit("auth-1", ACCOUNT, 5, now=0.0, ttl_s=1)
    book.expire(now=100.0)  # the local state of the account is gone
    assert book.local_figures(ACCOUNT) == (0, 0)
    assert (book.reserved(ACCOUNT), book.active_sessions(ACCOUNT)) == (10, 1)


# --- dirty tracking ------------------------------------------------------------------------------


def test_without_tracking_nothing_is_recorded() -> None:
    book = SessionBook()
    book.admit("auth-1", ACCOUNT, 5, now=0.0, ttl_s=30)
    book.mark_dirty([ACCOUNT])
    assert book.take_dirty() == set()


def test_every_change_of_local_figures_marks_its_account() -> None:
    book = SessionBook()
    book.track_changes()
    book.admit("auth-1", ACCOUNT, 5, now=0.0, ttl_s=30)
    assert book.take_dirty() == {ACCOUNT}
    assert book.take_dirty() == set()  # taken: the set starts anew

    book.start("acct-1", ACCOUNT, now=1.0, ttl_s=60)  # one more session
    assert book.take_dirty() == {ACCOUNT}
    book.reserve("acct-1", ACCOUNT, 9, now=1.0, ttl_s=60)  # the next quota
    assert book.take_dirty() == {ACCOUNT}
    book.reserve("ccr-2", OTHER, 9, now=1.0, ttl_s=60)
    assert book.take_dirty() == {OTHER}
    book.end("acct-1")
    assert book.take_dirty() == {ACCOUNT}
    book.end("acct-1")  # already gone: no change
    assert book.take_dirty() == set()


def test_reads_and_remote_figures_do_not_mark_anything() -> None:
    book = SessionBook()
    book.track_changes()
    book.reserved(ACCOUNT)
    book.active_sessions(ACCOUNT)
    book.setups_in_window(ACCOUNT, 0.0)
    book.set_remote("b", ACCOUNT, 10, 1)
    book.forget_instance("b")
    assert book.take_dirty() == set()


def test_a_touch_moves_an_expiry_but_no_figure() -> None:
    book = SessionBook()
    book.start("s", ACCOUNT, now=0.0, ttl_s=60)
    book.track_changes()
    book.touch("s", now=30.0, ttl_s=60)
    assert book.take_dirty() == set()


def test_expiry_marks_the_accounts_it_releases() -> None:
    book = SessionBook()
    book.admit("auth-1", ACCOUNT, 5, now=0.0, ttl_s=10)
    book.start("lost", OTHER, now=0.0, ttl_s=20)
    book.track_changes()
    book.expire(now=10.0)
    assert book.take_dirty() == {ACCOUNT}
    book.expire(now=20.0)
    assert book.take_dirty() == {OTHER}


def test_mark_dirty_and_local_accounts_for_a_republish() -> None:
    book = SessionBook()
    book.track_changes()
    book.admit("auth-1", ACCOUNT, 5, now=0.0, ttl_s=10)
    book.start("s", OTHER, now=0.0, ttl_s=10)
    book.take_dirty()
    assert sorted(book.local_accounts()) == [ACCOUNT, OTHER]
    book.mark_dirty(book.local_accounts())
    assert book.take_dirty() == {ACCOUNT, OTHER}


# --- expiry (every grant has a TTL) --------------------------------------------------------------


def test_a_reservation_expires_at_its_ttl() -> None:
    book = SessionBook()
    book.admit("auth-1", ACCOUNT, 500, now=100.0, ttl_s=30)
    assert book.expire(now=129.9) == 0
    assert book.reserved(ACCOUNT) == 500
    assert book.expire(now=130.0) == 1
    assert book.reserved(ACCOUNT) == 0
    assert book.reservation_count == 0


def test_a_lost_session_expires_and_stops_counting() -> None:
    book = SessionBook()
    book.start("lost", ACCOUNT, now=0.0, ttl_s=120)
    book.reserve("lost", ACCOUNT, 800, now=0.0, ttl_s=120)
    assert book.active_sessions(ACCOUNT) == 1
    assert book.expire(now=119.0) == 0
    assert book.expire(now=120.0) == 2  # its reservation and the session itself
    assert (book.active_sessions(ACCOUNT), book.reserved(ACCOUNT)) == (0, 0)
    assert book.session_count == 0
    assert not book.is_running("lost")


def test_news_from_a_session_pushes_its_expiry_out() -> None:
    book = SessionBook()
    book.start("s", ACCOUNT, now=0.0, ttl_s=60)
    book.reserve("s", ACCOUNT, 800, now=0.0, ttl_s=60)
    book.touch("s", now=50.0, ttl_s=60)
    assert book.expire(now=100.0) == 0
    assert book.active_sessions(ACCOUNT) == 1
    assert book.reserved(ACCOUNT) == 800
    assert book.expire(now=110.0) == 2


def test_a_second_start_of_the_same_session_is_a_touch() -> None:
    book = SessionBook()
    book.start("s", ACCOUNT, now=0.0, ttl_s=60)
    book.start("s", ACCOUNT, now=50.0, ttl_s=60)
    assert book.active_sessions(ACCOUNT) == 1
    assert book.expire(now=100.0) == 0


# --- setup rate ----------------------------------------------------------------------------------


def test_setups_count_within_the_window_only() -> None:
    book = SessionBook(setup_window_s=1.0)
    for now in (10.0, 10.2, 10.9):
        book.admit(f"auth-{now}", ACCOUNT, 1, now=now, ttl_s=30)
    assert book.setups_in_window(ACCOUNT, 10.95) == 3
    assert book.setups_in_window(ACCOUNT, 11.0) == 2  # the one at 10.0 is a full second old
    assert book.setups_in_window(ACCOUNT, 11.5) == 1
    assert book.setups_in_window(ACCOUNT, 12.0) == 0
    assert book.setups_in_window(OTHER, 11.0) == 0


@pytest.mark.parametrize("window", [0.5, 2.0])
def test_the_setup_window_is_a_parameter(window: float) -> None:
    book = SessionBook(setup_window_s=window)
    book.admit("auth-1", ACCOUNT, 1, now=0.0, ttl_s=30)
    assert book.setups_in_window(ACCOUNT, window - 0.01) == 1
    assert book.setups_in_window(ACCOUNT, window) == 0


def test_an_idle_account_is_dropped_by_expiry() -> None:
    book = SessionBook()
    book.admit("auth-1", ACCOUNT, 1, now=0.0, ttl_s=5)
    book.expire(now=10.0)
    assert book.local_accounts() == []
    assert book.setups_in_window(ACCOUNT, 10.0) == 0


# --- pending reservations claimed by a start -----------------------------------------------------


def test_a_start_claims_the_oldest_pending_reservation_of_its_account() -> None:
    book = SessionBook()
    book.admit("auth-1", ACCOUNT, 100, now=0.0, ttl_s=30)
    book.admit("auth-2", ACCOUNT, 200, now=1.0, ttl_s=30)
    book.start("acct-1", ACCOUNT, now=2.0, ttl_s=600)
    # The credit is held once, now under the session's key, with the session's TTL.
    assert book.reserved(ACCOUNT) == 300
    assert book.reservation_count == 2
    assert book.expire(now=31.5) == 1  # auth-2's hold ran out; acct-1's did not
    assert book.reserved(ACCOUNT) == 100
    book.end("acct-1")
    assert book.reserved(ACCOUNT) == 0
    assert book.active_sessions(ACCOUNT) == 0


def test_a_start_without_pending_reservation_only_counts_the_session() -> None:
    book = SessionBook()
    book.admit("auth-1", OTHER, 100, now=0.0, ttl_s=30)  # another account's hold stays
    book.start("acct-1", ACCOUNT, now=1.0, ttl_s=600)
    assert book.active_sessions(ACCOUNT) == 1
    assert book.reserved(ACCOUNT) == 0
    assert book.reserved(OTHER) == 100


def test_an_expired_pending_reservation_is_not_claimed() -> None:
    book = SessionBook()
    book.admit("auth-1", ACCOUNT, 100, now=0.0, ttl_s=30)
    book.expire(now=30.0)
    book.start("acct-1", ACCOUNT, now=31.0, ttl_s=600)
    assert book.reserved(ACCOUNT) == 0
    assert book.active_sessions(ACCOUNT) == 1


def test_admitting_again_under_the_same_key_replaces_the_hold() -> None:
    book = SessionBook()
    book.admit("auth-1", ACCOUNT, 100, now=0.0, ttl_s=30)
    book.admit("auth-1", ACCOUNT, 250, now=0.5, ttl_s=30)
    assert book.reserved(ACCOUNT) == 250
    book.start("acct-1", ACCOUNT, now=1.0, ttl_s=600)
    assert book.reserved(ACCOUNT) == 250
    assert book.local_figures(ACCOUNT) == (250, 1)


def test_admitting_again_under_the_same_key_for_another_account_moves_the_hold() -> None:
    """The earlier hold goes from its account (and its pending start), the new one counts on
    the new account and runs to its own expiry."""
    book = SessionBook()
    book.admit("call-1", ACCOUNT, 100, now=0.0, ttl_s=30)
    book.admit("call-1", ACCOUNT + 1, 250, now=10.0, ttl_s=30)
    assert (book.reserved(ACCOUNT), book.reserved(ACCOUNT + 1)) == (0, 250)
    assert book.reservation_count == 1
    book.expire(now=35.0)  # the first hold's deadline: not this hold's
    assert book.reserved(ACCOUNT + 1) == 250
    book.start("acct-1", ACCOUNT, now=36.0, ttl_s=600)  # nothing pending for the first account
    assert book.local_figures(ACCOUNT) == (0, 1)
    book.expire(now=40.0)
    assert (book.reserved(ACCOUNT + 1), book.reservation_count) == (0, 0)


def test_held_admissions_drop_out_of_the_cyclic_collector() -> None:
    """Hundreds of thousands of held admissions must not lengthen full GC passes: once the
    collector has seen them, none of the book's per-admission records is tracked."""
    book = SessionBook()
    for n in range(100):
        book.admit(f"nas|{n}", n % 7, 1_000, 0.0, 30.0)
    book.start("nas|running", 3, 0.0, 60.0)
    book.touch("nas|0", 1.0, 30.0)
    gc.collect()
    held = [
        *book._reservations.values(),
        *book._sessions.values(),
        *book._deadlines,
    ]
    assert len(held) > 200
    assert not any(gc.is_tracked(record) for record in held)
    # Per account, only fixed-size state is walked, not one entry per admission.
    assert not any(gc.is_tracked(state.pending) for state in book._accounts.values())


def test_bounded_expiry_does_a_slice_at_a_time_and_says_when_more_is_due() -> None:
    book = SessionBook()
    for n in range(1_200):
        book.admit(f"nas|{n}", n % 50, 1_000, 0.0, 30.0)
    assert book.reserved(7) == 24 * 1_000
    assert not book.expiry_due(29.0)
    assert book.expiry_due(30.0)
    slices = []
    while book.expiry_due(30.0):
        slices.append(book.expire(30.0, max_work=500))
    assert slices == [500, 500, 200]
    assert book.reservation_count == 0
    assert book.reserved(7) == 0
    assert book.expire(30.0, max_work=500) == 0


def test_the_idle_sweep_is_chunked_too() -> None:
    book = SessionBook(setup_window_s=1.0)
    for account in range(5_000):
        book.admit(f"nas|{account}", account, 0, 0.0, 1.0)
    book.expire(5.0, max_work=10_000)  # reservations gone; the sweep has started
    assert book.expiry_due(5.0)  # accounts are left to look at
    calls = 1
    while book.expiry_due(5.0):
        book.expire(5.0, max_work=10_000)
        calls += 1
    assert calls == 3  # 5,000 accounts, 2,000 a call
    assert book._accounts == {}


def test_the_deadline_heap_stays_bounded_under_steady_traffic() -> None:
    """Ended sessions leave stale deadlines behind (deleted lazily); the heap is rebuilt from
    what is held before they can pile up (the soak saw an hour's worth of them)."""
    book = SessionBook()
    now = 0.0
    for n in range(50_000):
        key = f"s{n}"
        book.admit(f"a{n}", 1, 10, now, 30.0)
        book.start(key, 1, now, 3720.0)
        book.touch(key, now, 3720.0)
        book.end(key)
        now += 0.01
        if n % 100 == 0:
            book.expire(now, max_work=100)
    assert book.session_count == 0 and book.reservation_count == 0
    assert book.deadline_count <= 4096 + 4 * 1  # not 100,000
    # What is held still expires on time after a rebuild.
    book.start("kept", 1, now, 5.0)
    for _ in range(5000):
        book.admit("x", 1, 10, now, 1.0)  # stale entries for one live reservation
    book.expire(now)
    assert book.is_running("kept")
    book.expire(now + 6.0)
    assert not book.is_running("kept") and book.reservation_count == 0


def test_a_touch_to_a_later_expiry_adds_no_deadline_and_expiry_follows_it() -> None:
    book = SessionBook()
    book.start("s", ACCOUNT, now=0.0, ttl_s=10.0)
    book.admit("r", ACCOUNT, 500, 0.0, 10.0)
    before = book.deadline_count
    for second in range(1, 6):  # interim updates: one deadline each before, none now
        book.touch("s", float(second), 10.0)
        book.touch("r", float(second), 10.0)
    assert book.deadline_count == before == 2
    book.expire(now=10.0)  # the old deadline surfaces and moves to 15
    assert book.is_running("s") and book.held_for("r") == 500
    assert book.deadline_count == 2
    book.expire(now=14.999)
    assert book.is_running("s") and book.held_for("r") == 500
    book.expire(now=15.0)
    assert not book.is_running("s") and book.held_for("r") == 0
    assert book.take_expired() == ["s"]


def test_updates_of_a_long_session_keep_one_deadline_per_hold() -> None:
    """A Diameter session re-sizes its hold and is touched on every CCR-Update: the deadlines
    stay one per session and one per hold, however many updates (not one more per update until
    the heap's rebuild), and the last update's expiry is the one that counts."""
    book = SessionBook()
    for n in range(100):
        book.start(f"s{n}", ACCOUNT, 0.0, 180.0, amount=0)
        book.reserve(f"s{n}", ACCOUNT, 10, 0.0, 180.0)
    for update in range(1, 60):
        now = update * 60.0
        for n in range(100):
            book.reserve(f"s{n}", ACCOUNT, 10, now, 180.0)
            book.touch(f"s{n}", now, 180.0)
        book.expire(now)
        assert book.deadline_count == 200
    assert book.reserved(ACCOUNT) == 1_000 and book.session_count == 100
    book.expire(59 * 60.0 + 179.9)
    assert book.session_count == 100
    book.expire(59 * 60.0 + 180.0)
    assert book.session_count == 0 and book.reserved(ACCOUNT) == 0
    # A re-size to a shorter hold takes effect on time.
    book.start("short", ACCOUNT, 0.0, 600.0, amount=0)
    book.reserve("short", ACCOUNT, 10, 0.0, 600.0)
    book.reserve("short", ACCOUNT, 10, 1.0, 5.0)
    book.expire(6.0)
    assert book.held_for("short") == 0 and book.is_running("short")


def test_a_touch_to_an_earlier_expiry_takes_effect_on_time() -> None:
    """A shorter validity (a CCR-Update granting less time) must not wait for the old one."""
    book = SessionBook()
    book.start("s", ACCOUNT, now=0.0, ttl_s=100.0)
    book.admit("r", ACCOUNT, 500, 0.0, 100.0)
    book.touch("s", 1.0, 5.0)
    book.touch("r", 1.0, 5.0)
    book.expire(now=5.9)
    assert book.is_running("s") and book.reserved(ACCOUNT) == 500
    book.expire(now=6.0)
    assert not book.is_running("s") and book.reserved(ACCOUNT) == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "start", "touch", "end", "reserve", "expire", "slice"]),
            st.integers(0, 11),  # key
            st.integers(1, 40),  # ttl (seconds)
            st.integers(0, 7),  # seconds that pass before the step
        ),
        max_size=120,
    ),
    st.sampled_from([None, 1, 3]),
    st.sampled_from([4096, 0, 2]),
)
def test_expiry_matches_a_model_of_expiries(
    steps: list[tuple[str, int, int, int]], max_work: int | None, stale_min: int
) -> None:
    """Whatever the order of admissions, starts, touches (later or earlier), re-sizes and ends,
    however a pass is sliced and whenever the heap is rebuilt (``stale_min`` 0 and 2: rebuilds
    all the time, read a slice at a time between the other steps; 4,096: in one step when
    they come), a hold or a session is gone exactly when its last expiry has passed, and not
    before."""
    book = SessionBook(stale_min=stale_min, rebuild_at_once=stale_min - 1)
    holds: dict[str, float] = {}
    running: dict[str, float] = {}
    keys = [f"k{n}" for n in range(12)]
    now = 0.0

    settled = [0.0]

    def settle() -> None:
        settled[0] = now
        book.expire(now, max_work=max_work)
        while book.expiry_due(now):
            book.expire(now, max_work=max_work)
        for key in [k for k, at in running.items() if at <= now]:
            del running[key]
            holds.pop(key, None)  # a session's end releases what is held under its key
        for key in [k for k, at in holds.items() if at <= now]:
            del holds[key]

    for op, n, ttl, wait in steps:
        now += wait
        key = f"k{n}"
        if op == "admit":
            book.admit(key, n % 3, 100, now, ttl)
            holds[key] = now + ttl
        elif op == "start":
            if key in running:
                book.start(key, n % 3, now, ttl)  # a touch
                running[key] = now + ttl
                if key in holds:
                    holds[key] = now + ttl
            else:
                book.start(key, n % 3, now, ttl, amount=0)
                running[key] = now + ttl
        elif op == "touch":
            book.touch(key, now, ttl)
            for table in (holds, running):
                if key in table:
                    table[key] = now + ttl
        elif op == "end":
            book.end(key)
            holds.pop(key, None)
            running.pop(key, None)
        elif op == "reserve":
            book.reserve(key, n % 3, 100, now, ttl)
            holds[key] = now + ttl
        elif op == "slice":  # one bounded call as of the last settled instant: nothing is due
            book.expire(settled[0], max_work=max_work)  # then, but a rebuild goes on a slice
        else:
            settle()
        assert {k for k in keys if book.is_running(k)} == set(running)
        assert {k for k in keys if book.held_for(k)} == set(holds)
    settle()
    assert {k for k in keys if book.is_running(k)} == set(running)
    assert {k for k in keys if book.held_for(k)} == set(holds)
    now += 41
    settle()
    assert book.session_count == book.reservation_count == 0
    assert book.deadline_count == 0


def test_the_heap_is_rebuilt_a_slice_at_a_time_and_nothing_is_lost() -> None:
    """Stale deadlines (sessions that ended before their expiry) bring a rebuild; it reads the
    tables in slices between other work, and whatever happens meanwhile (sessions started,
    ended, touched earlier or later, expiring) comes out of it on time."""
    book = SessionBook()
    for n in range(20_000):
        book.start(f"live-{n}", n % 100, 0.0, 1_000.0)
    for n in range(80_000):  # ended long before their expiry: their deadlines are stale
        book.start(f"gone-{n}", n % 100, 0.0, 1_000.0)
        book.end(f"gone-{n}")
    assert book.deadline_count == 100_000
    book.expire(1.0, max_work=10)  # starts the rebuild; reads 80 keys
    assert book._rebuild is not None and book.expiry_due(1.0)
    book.start("new", 1, 1.0, 50.0)  # queued while the rebuild runs
    book.admit("held", 1, 100, 1.0, 60.0)
    book.touch("live-0", 1.0, 20.0)  # earlier: a deadline of its own
    book.touch("live-1", 1.0, 2_000.0)  # later: none; the old one moves when it comes
    book.end("live-2")
    slices = 1
    while book.expiry_due(1.0) and slices < 5_000:
        book.expire(1.0, max_work=10)
        slices += 1
    assert not book.expiry_due(1.0)
    # 20,000 keys read 160 a slice and 100,000 old entries freed 1,280 a slice: in pieces
    assert slices > 150
    assert book._rebuild is None and book._discard == []
    assert book.deadline_count <= 20_000 + 4  # the stale ones are gone
    book.expire(20.999)
    assert book.is_running("live-0")
    book.expire(21.0)
    assert not book.is_running("live-0") and book.is_running("new")
    book.expire(51.0)
    assert not book.is_running("new") and book.held_for("held") == 100
    book.expire(61.0)
    assert book.held_for("held") == 0
    book.expire(999.999)
    assert book.session_count == 19_998
    book.expire(1_000.0)
    assert book.session_count == 1 and book.is_running("live-1")
    book.expire(2_001.0)
    assert book.session_count == 0 and book.deadline_count == 0


def test_the_heap_a_mass_close_leaves_is_freed_a_slice_at_a_time() -> None:
    """Accounting-On closing fifty thousand sessions at once: nothing is held, so the heap is
    rebuilt in one step, and the old one (every closed session's deadline) freed in slices."""
    book = SessionBook()
    for n in range(50_000):
        book.start(f"s{n}", ACCOUNT, 0.0, 3_600.0)
    for n in range(50_000):
        book.end(f"s{n}")
    book.expire(1.0, max_work=10)
    assert book.deadline_count == 0
    assert len(book._discard) == 50_000 - 10 * 256
    calls = 1
    while book.expiry_due(1.0) and calls < 1_000:
        book.expire(1.0, max_work=10)
        calls += 1
    assert calls == 20 and book._discard == []

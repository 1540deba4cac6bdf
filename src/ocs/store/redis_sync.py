"""Share session counts and credit reservations between ocsd instances through Redis.

A decision never talks to Redis: it reads ``SessionBook`` (dictionaries), which holds this
instance's own figures and the *remote* figures of the other instances. A background task,
``RedisSync``, keeps the two in step every ``redis.sync_interval_s`` with ONE command (a Lua
script) per round. PERF-NOTES: redis.asyncio costs 125-200 µs of client CPU per command, so one
command per request would cap a process near 5,000-8,000 requests/s; measured here, a round costs
~110 µs of client CPU plus ~1.5 µs per account it publishes (2 ms/s when idle at 20 rounds/s;
~25 µs per account on Redis Cluster, see below).

Key layout (``P`` = ``redis.key_prefix``, ``I`` = instance id: host-pid-random):

- ``P:{acct:ID}:i:I`` - string ``"<reserved micro-units> <running sessions> <version>"`` that
  instance I holds for account ID, ``PX instance_ttl_s``; deleted when both are 0. The version
  is I's own counter, raised for every round and every confirmation; no write replaces a key
  holding a newer version (see "Order" below). All keys of one account share the hash tag
  ``{acct:ID}`` (one slot on Redis Cluster: ``MGET`` of ``P:{acct:ID}:i:I`` for the live
  instances answers "who holds what for this account" in one command). They are the truth an
  operator or a tool can read; the instances learn changes from the stream below.
- ``P:{sync}:instances`` - sorted set, member I, score = last heartbeat (ms, Redis's clock);
  members older than ``instance_ttl_s`` are trimmed by whoever runs the next round.
- ``P:{sync}:changes`` - stream of announcements, one entry per instance and round that changed
  something: ``i`` = I, ``d`` = ``"ID reserved sessions ID reserved sessions ..."``, ``v`` = the
  round's version. Trimmed to ``instance_ttl_s`` of history (``XADD MINID ~``).

One round = one ``EVALSHA`` of ``ROUND_SCRIPT``, atomic (on one server), on the Redis server's
clock:

1. publish: for the accounts the book marked dirty since the last round, plus a chunk of the
   non-zero ones due for a TTL refresh, ``SET`` this instance's key to the current local figures
   with ``PX`` (``DEL`` it when both are 0) unless it holds a newer version, and ``XADD`` the
   same figures as one announcement;
2. heartbeat: ``ZADD`` this instance, ``ZREMRANGEBYSCORE`` the ones silent for ``instance_ttl_s``;
3. read: the live instance list and the stream entries after the last one read
   (``XRANGE (last``, at most 1,000; the rest next round, at once), less this instance's own.

Every key the script touches is given to it in ``KEYS``. On Redis Cluster (below) the script is
given only the two ``{sync}`` keys, which share a slot, and step 1's writes of the account keys
go out beside it as one small single-key script each (``KEY_SCRIPT``: the same ``SET`` or
``DEL`` unless the key is newer) in one cluster pipeline (redis-py groups them by node, and
follows ``MOVED``/``ASK`` while slots migrate); only that step is then not atomic with the rest,
which nothing relies on: the rounds read the stream, never these keys.

The answer is applied to the book: each other instance's announced figures replace what it held
for those accounts; every instance not in the live list is forgotten (``forget_instance``), which
is how a crashed one disappears after ``instance_ttl_s``, and a stopped one at once (it deletes its
keys and its heartbeat on the way out). Because the live list and the entries are read in one
atomic step, an announcement is never read without its instance being listed as live.

Why announcements rather than pulling (``MGET``) the accounts this instance looked at recently: a
pull list cannot know about an account that another instance has held a session for since long
before this one first looked at it, so that first decision would ignore a running session (an
account with ``max_sessions = 1`` would get a second one). Announcements tell every instance about
every change, at ~1 µs of parsing per account; and because every non-zero figure is written and
announced again at least every ``instance_ttl_s / 2`` (TTL refresh), the stream's
``instance_ttl_s`` of history is a complete picture: a starting or reconnecting instance rebuilds
the remote figures by reading it from the start. Pulling would also cost 3-4 µs per key of reply
parsing in redis-py (measured).

Why one Lua script: measured with redis-py here (client CPU, a round publishing 250 accounts),
250 pipelined ``SET``s cost 3.6 ms, through a cluster pipeline 6.1 ms, while one ``EVALSHA``
carrying the 250 keys in ``KEYS`` and the figures as one "ID r s ..." string costs 0.57 ms in all
(0.18 ms without the keys: building and sending them is 1.5 µs per account). The script also
makes a round atomic.

Redis Cluster: ``redis.url`` names any one node (``redis://`` or ``rediss://``, database 0); the
first round asks it ``INFO cluster`` and, when it answers ``cluster_enabled:1``, talks to the
cluster through ``redis.asyncio.cluster.RedisCluster`` from then on (nodes discovered from that
one). The sync stream and heartbeats live in the one ``{sync}`` slot (a round is one small script
there per instance and interval: no load worth sharding); the account keys spread over all slots.
On Cluster a round costs the client ~25 µs per account it publishes (the per-key commands),
against ~2 µs on one server: ~6 ms for a round of 250 accounts, in the background task. (The
account keys could be dropped there - no instance reads them, the stream is the complete picture -
but they are the per-account, per-slot view an operator reads, so they stay.) Detection rather
than a URL scheme of its own: the config accepts only ``redis://``, ``rediss://`` and ``unix://``.

Order: an instance learns another's figures for an account in two ways, from its announcements
in the stream and, when it confirms an admission, from that instance's key. The two can
disagree in time: instance A takes its round's figures, then confirms an admission (its key now
newer than the round), and only then does the round's announcement reach the stream; an
instance B that read A's key when it confirmed, and the stream after, would go back to A's older
figures and admit against credit A holds. So every write carries A's version (one counter per
instance, raised for each round's batch and each confirmation, in the order the figures were
taken), and B keeps, per instance, the versions it read from keys until the stream has caught
up with them: an announcement older than a key B has read is not applied to that account. A
writer without versions (before this order existed) is applied as it comes.

The key itself has the same race: A's round and its confirmations go out on different connections
(taking one from the pool can wait), so Redis may run the write of older figures after the write of
newer ones. A key gone back to a lower hold, or deleted under a hold that a confirmation wrote,
would let the next instance that reads it when it confirms admit against credit A holds. So every
write of A's key is a compare-and-set on the version, made by the Lua script that writes it (atomic
on the key's server): the key is written (``SET``, or ``DEL`` for 0 0) only when it is absent, has
no version (two fields: an ocsd from before versions) or a lower one; otherwise it already holds
these figures or later ones and is left as it is. A confirmation whose write is so skipped answers
all the same, since its decision is about the other instances' keys; a round's announcement goes
out all the same, since readers order announcements by version. A ``DEL`` leaves no version behind,
so a write older than it can still land after it; that brings back figures above the zeros it
replaced (other instances then refuse sooner, never admit more), and they go at the latest when the
key's ``PX`` runs out.

Redis unreachable, timing out or refusing: the round fails, ``ocs_redis_errors_total`` counts it,
the remote figures are cleared (decisions use local state alone), ``ocs_redis_up`` turns 0, one log
line says so, and rounds are retried with a capped backoff (0.1 s doubling to 5 s). The first good
round logs once, republishes every local figure and re-reads the stream from its start. Nothing
here raises into a request, and a round never blocks one: it runs in its own task, bounded by
``redis.timeout_s``. Clock skew between hosts does not matter: heartbeats and trimming use the
Redis server's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ocs.charging.sessions import SessionBook
from ocs.config import RedisConfig
from ocs.metrics import Metrics

log = logging.getLogger("ocs.redis")

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
MAX_ENTRIES_PER_ROUND = 1000
REFRESH_CHUNK = 2000  # accounts re-written per round for their TTL, at most

# Lua, the start of every script that writes this instance's account keys: whether the key
# holds figures older than a write of this version (a number), so that the write may replace
# them: the key is absent, has no version (two fields, written by an ocsd from before versions;
# or a third field that is not a number) or a lower one (see "Order" in the module docstring).
# Versions are RedisSync._version, a counter from 0 raised by one per round and confirmation:
# far below 2^53, up to which Lua's numbers (doubles) hold integers exactly.
STALE = """
local function stale(key, version)
  local held = string.match(redis.call('GET', key) or '', '^%d+ %d+ (%d+)$')
  return held == nil or tonumber(held) < version
end
"""

# One round. KEYS[1]: live instances (sorted set), KEYS[2]: change stream, KEYS[3] ...: this
# instance's keys of the accounts in ARGV[5], in its order (none: the caller writes them itself,
# as on Redis Cluster). ARGV[1]: instance, ARGV[2]: TTL (ms), ARGV[3]: first stream id to read
# ("-" or "(" .. last seen), ARGV[4]: most entries to read, ARGV[5]: this instance's figures to
# publish, "ID reserved sessions ID reserved sessions ..." ("" for none), ARGV[6]: their version.
# Returns {live instances, the others' entries, last entry id read ("" for none), entries read}.
# An account key holding a newer version than ARGV[6] is left as it is (STALE).
ROUND_SCRIPT = (
    STALE
    + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local me, ttl = ARGV[1], tonumber(ARGV[2])
local horizon = string.format('%.0f', now - ttl)
redis.call('ZADD', KEYS[1], string.format('%.0f', now), me)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
redis.call('PEXPIRE', KEYS[1], 2 * ttl)
if ARGV[5] ~= '' then
  if #KEYS > 2 then
    local k, version = 2, tonumber(ARGV[6])
    for _, reserved, sessions in string.gmatch(ARGV[5], '(%d+) (%d+) (%d+)') do
      k = k + 1
      if stale(KEYS[k], version) then
        if reserved == '0' and sessions == '0' then
          redis.call('DEL', KEYS[k])
        else
          redis.call('SET', KEYS[k], reserved .. ' ' .. sessions .. ' ' .. ARGV[6], 'PX', ttl)
        end
      end
    end
  end
  redis.call('XADD', KEYS[2], 'MINID', '~', horizon, '*', 'i', me, 'd', ARGV[5], 'v', ARGV[6])
  redis.call('PEXPIRE', KEYS[2], 2 * ttl)
end
local entries = redis.call('XRANGE', KEYS[2], ARGV[3], '+', 'COUNT', ARGV[4])
local others, last = {}, ''
for _, entry in ipairs(entries) do
  last = entry[1]
  if entry[2][2] ~= me then others[#others + 1] = entry end
end
return {redis.call('ZRANGE', KEYS[1], 0, -1), others, last, #entries}
"""
)

# One account key of a round on Redis Cluster, where ROUND_SCRIPT writes none (see the module
# docstring). KEYS[1]: this instance's key, ARGV[1]: its figures ("reserved sessions version"),
# ARGV[2]: TTL (ms). Written as ROUND_SCRIPT writes it: deleted for 0 0, and not at all over a
# newer version.
KEY_SCRIPT = (
    STALE
    + """
if stale(KEYS[1], tonumber(string.match(ARGV[1], '(%d+)$'))) then
  if string.match(ARGV[1], '^0 0 ') then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  end
end
return 0
"""
)

# An admission of an account with little credit left, confirmed against the other instances at
# once (ocs.charging.pipeline: atomic_below_grants). KEYS[1]: this instance's key for the
# account, KEYS[2..]: the other live instances' keys for it (all in the account's {acct:ID}
# slot). ARGV[1]: this instance's figures with the new reservation ("reserved sessions version"),
# ARGV[2]: TTL (ms), ARGV[3]: what this instance believed the others held (micro-units).
# If they hold more, nothing is written; either way their figures are returned. This instance's
# key is not written over a newer version either (STALE): a round that took its figures after
# these has written them already. The answer is the same, as it is about the others' keys.
CONFIRM_SCRIPT = (
    STALE
    + """
local others, figures = 0, {}
for i = 2, #KEYS do
  local value = redis.call('GET', KEYS[i]) or ''
  others = others + (tonumber(string.match(value, '^(%d+)')) or 0)
  figures[#figures + 1] = value
end
if others > tonumber(ARGV[3]) then
  return {0, figures}
end
if stale(KEYS[1], tonumber(string.match(ARGV[1], '(%d+)$'))) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return {1, figures}
"""
)

# Redis errors (connection refused, reset, timed out, READONLY, OOM, ...), socket errors and our
# own asyncio timeout: all mean "Redis is not usable now".
UNAVAILABLE = (RedisError, OSError, TimeoutError)


def new_instance_id() -> str:
    """host-pid-random: unique per process start, readable in ``redis-cli``."""
    host = socket.gethostname().replace(" ", "_") or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class KeyLayout:
    """Where everything lives in Redis (see the module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.instances = f"{prefix}:{{sync}}:instances"
        self.changes = f"{prefix}:{{sync}}:changes"

    def account(self, account_id: int, instance: str) -> str:
        return f"{self.prefix}:{{acct:{account_id}}}:i:{instance}"

    def account_parts(self, instance: str) -> tuple[str, str]:
        """What goes before and after the account id in ``account(id, instance)``."""
        return f"{self.prefix}:{{acct:", f"}}:i:{instance}"

    def accounts(self, accounts: Iterable[int], instance: str) -> list[str]:
        before, after = self.account_parts(instance)
        return [f"{before}{account}{after}" for account in accounts]


class RedisSync:
    """The background task that publishes this instance's figures and reads the others'."""

    def __init__(
        self,
        book: SessionBook,
        *,
        url: str,
        key_prefix: str = "ocs",
        sync_interval_s: float = 0.05,
        instance_ttl_s: float = 15.0,
        timeout_s: float = 1.0,
        instance: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.book = book
        self.url = url
        self.keys = KeyLayout(key_prefix)
        self.interval_s = sync_interval_s
        self.instance_ttl_s = instance_ttl_s
        self.refresh_s = instance_ttl_s / 4
        self.timeout_s = timeout_s
        self.instance = instance or new_instance_id()
        self.metrics = metrics
        self._client_options: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 0),  # we retry, with our own backoff
            "client_name": f"ocsd:{self.instance}",
        }
        self.client: aioredis.Redis | RedisCluster = aioredis.from_url(url, **self._client_options)
        self.cluster: bool | None = None  # None: not asked yet (the first round asks)
        self.up: bool | None = None  # None: no round finished yet
        self.live: set[str] = set()  # other live instances, as of the last round
        self.rounds = 0
        self.errors = 0
        self._sha: str | None = None
        self._key_sha: str | None = None  # KEY_SCRIPT, loaded on Redis Cluster alone
        self._confirm_sha: str | None = None
        self.confirm_calls = 0
        self._after: str | None = None  # last stream id read; None: read from the start
        self._last_ok: float | None = None
        # Accounts with non-zero figures of this instance in Redis; those written since the
        # current refresh period began; those due to be written again (TTL refresh).
        self._published: set[int] = set()
        self._written: set[int] = set()
        self._due: list[int] = []
        self._period_started: float | None = None
        self._task: asyncio.Task[None] | None = None
        # This instance's version: raised for each round's batch and each confirmation.
        self._version = 0
        # Per other instance: accounts whose figures were read from its key (a confirmation)
        # at a version its announcements read so far have not reached (see "Order" above).
        self._heard: dict[str, dict[int, int]] = {}
        book.track_changes()
        # What the book held before this started (holds rebuilt from the database at
        # start-up) goes out in the first round.
        book.mark_dirty(book.local_accounts())
        if metrics is not None:
            metrics.redis_up.set(0)

    @classmethod
    def from_config(
        cls, book: SessionBook, config: RedisConfig, *, metrics: Metrics | None = None
    ) -> RedisSync:
        if config.url is None:
            raise ValueError("redis.url is not set")
        return cls(
            book,
            url=config.url,
            key_prefix=config.key_prefix,
            sync_interval_s=config.sync_interval_s,
            instance_ttl_s=config.instance_ttl_s,
            timeout_s=config.timeout_s,
            metrics=metrics,
        )

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="redis-sync")
        return self._task

    async def stop(self, *, retire: bool = True) -> None:
        """Stop the task; with ``retire``, delete this instance's keys and heartbeat (bounded by
        ``timeout_s``) so the others forget it at once rather than after ``instance_ttl_s``."""
        if self._task is not None:
            # Cancel until it is done: a cancellation can be lost in a library's await (seen
            # with redis-py's cluster client on Python 3.11), and the loop would run on.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=self.timeout_s)
            self._task = None
        if retire and self.up:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._retire()
            except UNAVAILABLE as exc:
                log.debug("redis: could not retire instance=%s: %r", self.instance, exc)
        with contextlib.suppress(*UNAVAILABLE):
            await self.client.aclose()

    async def run(self) -> None:
        """Sync rounds every ``sync_interval_s`` until cancelled; never raises a Redis error."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN_S
        while True:
            started = loop.time()
            try:
                more = await self.sync_once()
            except UNAVAILABLE as exc:
                self._failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            except Exception as exc:  # a bug or an answer we cannot read: same degradation
                self._failed(exc, unexpected=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            if self.metrics is not None:
                self.metrics.redis_sync_duration.observe(loop.time() - started)
            if not more:  # else: stream entries are still waiting, read them now
                await asyncio.sleep(max(self.interval_s - (loop.time() - started), 0.0))

    # --- one round ----------------------------------------------------------------------------

    async def sync_once(self) -> bool:
        """One round: publish, heartbeat, read the others' changes. Raises what Redis raises
        (the caller counts it); returns True when more stream entries are waiting."""
        now = asyncio.get_running_loop().time()
        if self._last_ok is not None and now - self._last_ok > self.instance_ttl_s / 2:
            # Stalled so long that the stream may have been trimmed past us: read it anew.
            self._resync()
        batch = self._take_batch(now)
        self._version += 1
        version = self._version
        try:
            if self.cluster is None:
                await self._connect()
            if self._sha is None:
                await self._load_script()
            try:
                result = await self._round(batch, version)
            except NoScriptError:  # Redis restarted (or SCRIPT FLUSH) since we loaded it
                await self._load_script()
                result = await self._round(batch, version)
        except BaseException:
            self.book.mark_dirty(account for account, _, _ in batch)
            raise
        self._commit_batch(batch)
        live, entries, last_id, read = result
        self._apply(live, entries)
        if last_id:
            self._after = _text(last_id)
        self._last_ok = now
        self.rounds += 1
        self._succeeded()
        return int(read) >= MAX_ENTRIES_PER_ROUND

    async def _connect(self) -> None:
        """Ask the server named by ``redis.url`` whether it is a Redis Cluster node; if so, talk
        to the cluster through ``RedisCluster`` from now on."""
        try:
            async with asyncio.timeout(self.timeout_s):
                info = await self.client.info("cluster")
        except ResponseError as exc:  # INFO refused (ACL, renamed): take it for one server
            log.debug("redis: INFO cluster refused, assuming one server: %r", exc)
            info = {}
        if not info.get("cluster_enabled"):
            self.cluster = False
            return
        if not self.url.startswith(("redis://", "rediss://")):
            raise RedisError("a Redis Cluster must be named by a redis:// or rediss:// URL")
        standalone, self.client = (
            self.client,
            RedisCluster.from_url(self.url, **self._client_options),
        )
        self._sha = None
        self.cluster = True
        with contextlib.suppress(*UNAVAILABLE):
            await standalone.aclose()
        log.info("redis: %s is a Redis Cluster node", _safe_url(self.url))

    async def _load_script(self) -> None:
        # On Cluster, SCRIPT LOAD goes to every primary. A round there needs KEY_SCRIPT too: it
        # is loaded with ROUND_SCRIPT, and again whenever either is missing (NOSCRIPT).
        async with asyncio.timeout(self.timeout_s):
            sha = await self.client.script_load(ROUND_SCRIPT)
            if self.cluster:
                self._key_sha = _text(await self.client.script_load(KEY_SCRIPT))
        self._sha = _text(sha)

    async def _round(self, batch: list[tuple[int, int, int]], version: int) -> list[Any]:
        assert self._sha is not None
        accounts = self.keys.accounts((account for account, _, _ in batch), self.instance)
        figures = " ".join(f"{a} {r} {s}" for a, r, s in batch)
        args = (
            self.instance,
            int(self.instance_ttl_s * 1000),
            "-" if self._after is None else f"({self._after}",
            MAX_ENTRIES_PER_ROUND,
            figures,
            version,
        )
        if not self.cluster:  # one server: the account keys in the script, declared in KEYS
            call = self.client.evalsha(
                self._sha,
                2 + len(accounts),
                self.keys.instances,
                self.keys.changes,
                *accounts,
                *args,
            )
            async with asyncio.timeout(self.timeout_s):
                result: list[Any] = await call
            return result
        # Cluster: the script touches the {sync} slot alone; the account keys, one slot each, go
        # out beside it as one KEY_SCRIPT each. A NOSCRIPT of either raises NoScriptError.
        script = self.client.evalsha(self._sha, 2, self.keys.instances, self.keys.changes, *args)
        if not batch:
            async with asyncio.timeout(self.timeout_s):
                only: list[Any] = await script
            return only
        assert self._key_sha is not None
        pipe = self.client.pipeline()
        ttl_ms = int(self.instance_ttl_s * 1000)
        for key, (_, reserved, sessions) in zip(accounts, batch, strict=True):
            value = f"{reserved} {sessions} {version}"
            pipe.execute_command("EVALSHA", self._key_sha, 1, key, value, ttl_ms)
        async with asyncio.timeout(self.timeout_s):
            result, _ = await asyncio.gather(script, pipe.execute())
        return result

    def _take_batch(self, now: float) -> list[tuple[int, int, int]]:
        """(account, reserved, sessions) to publish: the dirty accounts and a chunk of the
        non-zero ones due for a TTL refresh. A zero is published only to replace a non-zero.

        Every ``refresh_s``, what was not written during the period before is due; so a
        non-zero figure is written (and announced) again at least every ``2 * refresh_s`` plus
        the chunks' delay, well within ``instance_ttl_s``."""
        if self._period_started is None:
            self._period_started = now
        elif now - self._period_started >= self.refresh_s:
            self._due.extend(self._published - self._written)
            self._written = set()
            self._period_started = now
        accounts = self.book.take_dirty()
        if self._due:
            accounts.update(self._due[-REFRESH_CHUNK:])
            del self._due[-REFRESH_CHUNK:]
        local, published = self.book.local_figures, self._published
        batch = []
        for account in accounts:
            reserved, sessions = local(account)
            if reserved or sessions or account in published:
                batch.append((account, reserved, sessions))
        return batch

    def _commit_batch(self, batch: list[tuple[int, int, int]]) -> None:
        for account, reserved, sessions in batch:
            if reserved or sessions:
                self._published.add(account)
                self._written.add(account)
            else:
                self._published.discard(account)

    def _apply(self, live_raw: Iterable[bytes], entries: list[Any]) -> None:
        book, heard_by = self.book, self._heard
        live = {_text(name) for name in live_raw}
        live.discard(self.instance)
        reached: dict[str, int] = {}  # per instance: the newest version announced this round
        for entry_id, fields in entries:
            pairs = dict(zip(fields[::2], fields[1::2], strict=False))
            instance = _text(pairs.get(b"i", b""))
            if not instance or instance == self.instance:
                continue
            try:
                figures = [int(n) for n in pairs.get(b"d", b"").split()]
                raw_version = pairs.get(b"v")
                version = int(raw_version) if raw_version is not None else None
            except ValueError:
                log.debug("redis: malformed announcement id=%s", _text(entry_id))
                continue
            heard = heard_by.get(instance) if version is not None else None
            for i in range(0, len(figures) - 2, 3):
                account = figures[i]
                if heard and version is not None and heard.get(account, -1) > version:
                    continue  # older than what its key said when this instance confirmed
                book.set_remote(instance, account, figures[i + 1], figures[i + 2])
            if version is not None:
                reached[instance] = version
        for instance, version in reached.items():
            heard = heard_by.get(instance)
            if heard:  # its announcements are now as new as these keys: nothing older can come
                for account in [a for a, v in heard.items() if v <= version]:
                    del heard[account]
                if not heard:
                    del heard_by[instance]
        for instance in book.remote_instances():
            if instance not in live:
                book.forget_instance(instance)
        for instance in [i for i in heard_by if i not in live]:
            del heard_by[instance]
        self.live = live

    async def _retire(self) -> None:
        keys = self.keys.accounts(self._published, self.instance)
        pipe = self.client.pipeline(transaction=False)
        if isinstance(pipe, ClusterPipeline):  # one key, so one slot, per command
            for key in keys:
                pipe.execute_command("DEL", key)
        else:
            for i in range(0, len(keys), 1000):
                pipe.delete(*keys[i : i + 1000])
        pipe.zrem(self.keys.instances, self.instance)
        await pipe.execute()
        self._published.clear()
        self._written.clear()
        self._due.clear()

    # --- admissions confirmed at once ---------------------------------------------------------

    def usable(self) -> bool:
        """Whether Redis answered the last round (confirmations go out only then)."""
        return bool(self.up)

    async def confirm(self, account_id: int, expected_remote: int) -> bool:
        """``AtomicReserver.confirm``: one ``EVALSHA`` on the account's slot. Raises what
        Redis raises (the pipeline then decides from local figures)."""
        reserved, sessions = self.book.local_figures(account_id)
        others = sorted(self.live)
        keys = [self.keys.account(account_id, self.instance)] + [
            self.keys.account(account_id, other) for other in others
        ]
        ttl_ms = int(self.instance_ttl_s * 1000)
        self._version += 1
        args = (f"{reserved} {sessions} {self._version}", ttl_ms, expected_remote)
        self.confirm_calls += 1
        async with asyncio.timeout(self.timeout_s):
            if self._confirm_sha is None:
                self._confirm_sha = _text(await self.client.script_load(CONFIRM_SCRIPT))
            try:
                ok, figures = await self.client.evalsha(self._confirm_sha, len(keys), *keys, *args)
            except NoScriptError:
                self._confirm_sha = _text(await self.client.script_load(CONFIRM_SCRIPT))
                ok, figures = await self.client.evalsha(self._confirm_sha, len(keys), *keys, *args)
        for other, raw in zip(others, figures, strict=True):
            parts = _text(raw).split()
            held, running = (int(parts[0]), int(parts[1])) if len(parts) >= 2 else (0, 0)
            self.book.set_remote(other, account_id, held, running)
            if len(parts) == 3:  # until its announcements reach this version, they are older
                self._heard.setdefault(other, {})[account_id] = int(parts[2])
        if ok:
            self._published.add(account_id)
            self._written.add(account_id)
        return bool(ok)

    # --- up and down --------------------------------------------------------------------------

    def _resync(self) -> None:
        """Start again from nothing: forget the others, re-read the stream from its start and
        publish every local figure again (Redis may have lost them, or kept stale ones)."""
        self.book.clear_remote()
        self._heard.clear()
        self._after = None
        self.book.mark_dirty(self._published)
        self.book.mark_dirty(self.book.local_accounts())

    def _failed(self, exc: BaseException, *, unexpected: bool = False) -> None:
        self.errors += 1
        if self.metrics is not None:
            self.metrics.redis_errors.inc()
        if self.up is not False:
            log.warning(
                "redis unavailable, deciding from this instance's figures alone url=%s error=%s",
                _safe_url(self.url),
                _describe(exc),
                exc_info=exc if unexpected else None,
            )
            self.up = False
            self.live = set()
            self._resync()
            if self.metrics is not None:
                self.metrics.redis_up.set(0)
                self.metrics.redis_instances.set(0)

    def _succeeded(self) -> None:
        if self.up is not True:
            log.info(
                "redis sync up instance=%s other_instances=%d url=%s",
                self.instance,
                len(self.live),
                _safe_url(self.url),
            )
            self.up = True
            if self.metrics is not None:
                self.metrics.redis_up.set(1)
        if self.metrics is not None:
            self.metrics.redis_instances.set(len(self.live))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _safe_url(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"

"""The request throttle: a token bucket per source for unauthenticated requests, given `now`.

Owns: the buckets behind `protection.rate` and `burst` (SECURITY-CASES 26, 33), their sizing
(`Throttle.allow_request`), and the never_ban answer cached in each bucket. Every method takes
`now` (seconds, from a monotonic clock owned by the shell) and answers with a value.

Never does: read a clock, sleep, log, parse SIP or reply (the shell answers a refused request
with 503 + Retry-After, RFC 3261 §21.5.4, or drops it). Stdlib only.

Memory: the buckets are an `OrderedDict` capped at `max_tracked_sources`, in least-recently-seen
order (`move_to_end`): when full the oldest bucket is evicted (the likeliest to be full), and
`expire()` pops idle buckets from the front only (amortised O(1), nothing sorted).

RFC 3261 §17.1.1.2 / §17.1.2.2 (Timers A/E: how many unauthenticated retransmissions a
well-behaved phone sends).
"""

from __future__ import annotations

from collections import OrderedDict

from sipguard.policy.guard_settings import GuardSettings


class _Bucket:
    """Token bucket state of one source; `exempt` caches the never_ban answer for it."""

    __slots__ = ("exempt", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float, exempt: bool) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.exempt = exempt


class Throttle:
    """Token buckets per source for unauthenticated requests (sans-IO)."""

    def __init__(self, settings: GuardSettings) -> None:
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._evicted = 0
        self.configure(settings)

    def configure(self, settings: GuardSettings) -> None:
        """Apply new settings (config reload). Cached never_ban answers live in the buckets, so
        the buckets are forgotten: a forgotten bucket is a full one, which only errs on the side
        of serving."""
        self._settings = settings
        self._exempt = settings.exempt_matcher()
        # Seconds after which an idle bucket is full again, i.e. no different from no bucket.
        self._refill_time = settings.burst / settings.rate
        self._buckets.clear()

    def allow_request(self, ip: str, now: float, cost: float = 1.0) -> bool:
        """Token bucket per source for unauthenticated requests (those the core would challenge).

        Sizing (defaults rate=50/s, burst=400), for 200 phones behind one NAT re-registering at
        once after an outage:
          - each phone sends REGISTER without credentials -> 401 -> REGISTER with credentials;
            only the first is unauthenticated and costs a token: 200 tokens;
          - over UDP a phone retransmits (RFC 3261 §17.1.2.2 Timer E: T1 = 0.5 s, then 1, 2 s)
            only while no response arrived; the 401 is sent at once, so at most the one
            retransmission that crosses it in flight (or follows a lost 401): +200 tokens;
          - worst case all at the same instant: 2 x 200 = 400 = burst, nothing refused;
          - spread over ~5 s: 400 / 5 s = 80/s on average, of which the bucket refills 50/s:
            400 + 5 x 50 = 650 tokens available >= 400 needed;
          - then refreshes: 200 phones with a 60 s expiry re-register every ~30 s: ~7/s << 50/s.
        A flood of 1000/s from one source gets the 400 burst, then 50/s: 900 of 10 000 in 10 s.
        `cost` > `burst` is never allowed. never_ban sources are never limited (the answer of
        the matcher is cached in the bucket, so it runs once per tracked source)."""
        buckets = self._buckets
        bucket = buckets.get(ip)
        if bucket is None:
            if len(buckets) >= self._settings.max_tracked_sources:
                buckets.popitem(last=False)  # least recently seen: the likeliest to be full
                self._evicted += 1
            bucket = buckets[ip] = _Bucket(float(self._settings.burst), now, self._exempt(ip))
        else:
            buckets.move_to_end(ip)
            elapsed = now - bucket.stamp
            if elapsed > 0:  # a clock that steps back must not mint tokens
                tokens = bucket.tokens + elapsed * self._settings.rate
                burst = self._settings.burst
                bucket.tokens = burst if tokens > burst else tokens
                bucket.stamp = now
        if bucket.exempt:
            return True
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        return False

    def expire(self, now: float) -> None:
        """Forget the buckets that are full again (ordered by last use: pops from the front)."""
        # A bucket idle for burst/rate seconds is full: forgetting it changes nothing.
        idle_since = now - self._refill_time
        buckets = self._buckets
        while buckets and next(iter(buckets.values())).stamp <= idle_since:
            buckets.popitem(last=False)

    @property
    def tracked(self) -> int:
        """Buckets in the table."""
        return len(self._buckets)

    @property
    def evicted(self) -> int:
        """Buckets evicted from the full table since start."""
        return self._evicted

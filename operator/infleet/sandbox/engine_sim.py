"""Pure discrete-time simulation of LLM inference servers with continuous batching.

No I/O, no clock: the caller passes the time of every tick and the random generator, so tests
drive it with plain numbers. :mod:`infleet.sandbox.engine` wraps it in a process that serves
the state as vLLM-compatible Prometheus metrics.

Model of one replica (:class:`ReplicaSim`)
-------------------------------------------
* ``slots`` sequences run at once (the batch ``B``); further requests wait in a FIFO queue.
* An admitted request first prefills for ``input_tokens / prefill_tokens_per_second``
  seconds (it holds a slot meanwhile); its first token appears when the prefill ends, so
  TTFT = queue wait + prefill.
* Then it decodes ``output_tokens`` tokens. Every decoding sequence advances one token per
  decode step of ``t(b) = decode_base_ms + decode_per_sequence_ms * b`` at the current
  decode batch ``b``. That is also its inter-token latency.
* ``perf_factor`` (the pool's hidden performance factor) divides every duration: 0.7 means
  the hardware does 70% of what the profile says.

Per-request work is O(log n) per event (heaps), never per token: all decoding sequences of a
replica share one *token clock* (tokens generated per sequence since the replica started),
so a request's completion is a fixed point on that clock, and a tick advances the clock once.
The inter-token latency histogram is fed once per tick with the step time, weighted by the
tokens generated in that tick.

Service time at full batch is ``S = input / prefill_tps + output * t(B) / 1000``, the same as
:func:`infleet.core.capacity.service_seconds`, so a replica saturates at ``B / S`` requests/s
(times the perf factor).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
"""vLLM's buckets for ``vllm:time_to_first_token_seconds`` (upper bounds, seconds)."""
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
"""vLLM's buckets for ``vllm:inter_token_latency_seconds``."""
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
"""vLLM's buckets for ``vllm:e2e_request_latency_seconds``."""

MAX_BACKLOG = 100_000
"""Most requests a model holds while it has no ready replica (a gateway's queue); beyond it
new arrivals are dropped, so an idle model cannot grow memory without bound."""


class Histogram:
    """A cumulative histogram with fixed upper bounds, fed with weighted observations."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0.0] * (len(self.bounds) + 1)  # last: +Inf only
        self.sum = 0.0
        self.count = 0.0

    def observe(self, value: float, weight: float = 1.0) -> None:
        """Add ``weight`` observations of ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += weight
        self.sum += value * weight
        self.count += weight

    def cumulative(self) -> list[tuple[float, float]]:
        """``(upper bound, cumulative count)`` pairs, ending with ``(inf, count)``."""
        total = 0.0
        out: list[tuple[float, float]] = []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out

    def quantile(self, q: float) -> float:
        """The ``q`` quantile as Prometheus' ``histogram_quantile`` computes it (linear
        interpolation inside the bucket); NaN when empty."""
        if self.count <= 0:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in self.cumulative():
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower


@dataclass(frozen=True)
class ReplicaSpec:
    """Performance of one replica (before the pool's perf factor)."""

    slots: int
    """Sequences batched at once, >= 1."""
    prefill_tokens_per_second: float
    """Prompt tokens processed per second, > 0."""
    decode_base_ms: float
    """Fixed part of a decode step, ms."""
    decode_per_sequence_ms: float
    """Extra decode step time per sequence in the batch, ms."""
    kv_capacity_tokens: float
    """Tokens the KV cache holds (for ``kv_cache_usage_perc``), > 0."""

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"ReplicaSpec.slots must be >= 1, got {self.slots}")
        for name in ("prefill_tokens_per_second", "kv_capacity_tokens"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"ReplicaSpec.{name} must be a finite number > 0, got {value!r}")
        for name in ("decode_base_ms", "decode_per_sequence_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"ReplicaSpec.{name} must be a finite number >= 0, got {value!r}")
        if self.decode_base_ms + self.decode_per_sequence_ms <= 0:
            raise ValueError("ReplicaSpec decode step must take some time (base + per sequence)")

    def step_ms(self, batch: int) -> float:
        """Decode step time at ``batch`` sequences, ms (at perf factor 1)."""
        return self.decode_base_ms + self.decode_per_sequence_ms * batch

    def saturation_rate(self, input_tokens: float, output_tokens: float) -> float:
        """Requests/s at full batch (perf factor 1): ``slots / S``."""
        service = input_tokens / self.prefill_tokens_per_second + output_tokens * (
            self.step_ms(self.slots) / 1000.0
        )
        return self.slots / service


@dataclass
class Request:
    """One request in flight."""

    arrival: float
    """Arrival time, seconds."""
    input_tokens: int
    output_tokens: int
    start_clock: float = 0.0
    """The replica's token clock when decoding began."""


@dataclass
class _Counters:
    success: float = 0.0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    finished_prompt_tokens: float = 0.0
    """Prompt tokens of finished requests (vLLM's ``request_prompt_tokens`` histogram sum)."""
    finished_generation_tokens: float = 0.0
    """Output tokens of finished requests (``request_generation_tokens`` sum)."""


class ReplicaSim:
    """One inference server (see the module docs)."""

    def __init__(self, spec: ReplicaSpec, perf_factor: float = 1.0, ready_at: float = 0.0) -> None:
        self.spec = spec
        self.perf_factor = perf_factor
        self.ready_at = ready_at
        """Time from which it takes traffic (start-up delay)."""
        self.queue: deque[Request] = deque()
        self._prefilling: list[tuple[float, int, Request]] = []
        self._decoding: list[tuple[float, int, Request]] = []
        self._seq = 0
        self.clock = 0.0
        """Tokens generated per decoding sequence since start (the shared token clock)."""
        self._active_input = 0.0
        self._decoding_start_sum = 0.0
        self.counters = _Counters()
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    # -- state ----------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Sequences holding a slot (prefilling or decoding)."""
        return len(self._prefilling) + len(self._decoding)

    @property
    def waiting(self) -> int:
        """Requests in the queue."""
        return len(self.queue)

    def ready(self, now: float) -> bool:
        """Whether the replica takes traffic at ``now``."""
        return now >= self.ready_at

    def load_score(self) -> float:
        """Outstanding requests per unit of capacity (lower takes the next request)."""
        return (self.running + self.waiting + 1) / (self.spec.slots * self.perf_factor)

    def kv_usage(self) -> float:
        """Fraction of the KV cache in use: prompt plus generated tokens of running requests."""
        generated = len(self._decoding) * self.clock - self._decoding_start_sum
        return min(1.0, max(0.0, (self._active_input + generated) / self.spec.kv_capacity_tokens))

    def drain(self) -> list[Request]:
        """Remove and return queued requests (the replica is going away); running ones are
        lost, as on a real pod deletion."""
        out = list(self.queue)
        self.queue.clear()
        return out

    # -- dynamics -------------------------------------------------------------------------

    def _admit(self, now: float) -> None:
        speed = self.perf_factor
        while self.queue and self.running < self.spec.slots:
            request = self.queue.popleft()
            start = max(now, request.arrival)
            done = start + request.input_tokens / (self.spec.prefill_tokens_per_second * speed)
            self._seq += 1
            heapq.heappush(self._prefilling, (done, self._seq, request))
            self._active_input += request.input_tokens

    def tick(self, start: float, dt: float) -> None:
        """Advance from ``start`` to ``start + dt``."""
        end = start + dt
        self._admit(start)
        # Prefills ending in this tick: first token, then the request joins the decode batch.
        while self._prefilling and self._prefilling[0][0] <= end:
            done, seq, request = heapq.heappop(self._prefilling)
            self.ttft.observe(done - request.arrival)
            self.counters.prompt_tokens += request.input_tokens
            request.start_clock = self.clock
            self._decoding_start_sum += self.clock
            heapq.heappush(self._decoding, (self.clock + request.output_tokens, seq, request))
        batch = len(self._decoding)
        if batch:
            step = self.spec.step_ms(batch) / 1000.0 / self.perf_factor
            advance = dt / step
            before = self.clock
            self.clock += advance
            self.counters.generation_tokens += advance * batch
            self.itl.observe(step, advance * batch)
            while self._decoding and self._decoding[0][0] <= self.clock:
                finish, _, request = heapq.heappop(self._decoding)
                finished_at = start + dt * (finish - before) / advance
                self.e2e.observe(max(0.0, finished_at - request.arrival))
                self.counters.success += 1
                self.counters.finished_prompt_tokens += request.input_tokens
                self.counters.finished_generation_tokens += request.output_tokens
                self._active_input -= request.input_tokens
                self._decoding_start_sum -= request.start_clock
                # Tokens past the request's end were not generated.
                self.counters.generation_tokens -= self.clock - finish
        self._admit(end)


@dataclass
class ModelLoad:
    """Requests to generate for one model: a Poisson stream with a fixed mix, or a trace."""

    rate: float = 0.0
    """Requests per second (Poisson) when ``trace`` is empty."""
    input_tokens: int = 512
    output_tokens: int = 128
    trace: Sequence[tuple[float, int, int]] = ()
    """``(seconds since trace start, input tokens, output tokens)``, sorted by time."""
    trace_start: float = 0.0
    """Simulation time at which the trace's time 0 is replayed."""


class Rng(Protocol):
    """What the simulation needs from a random generator (``numpy.random.Generator`` fits)."""

    def poisson(self, lam: float) -> Any:
        """A Poisson-distributed count with mean ``lam``."""

    def random(self) -> float:
        """A uniform number in [0, 1)."""


@dataclass
class ModelSim:
    """All replicas of one model and its request stream."""

    load: ModelLoad = field(default_factory=ModelLoad)
    replicas: dict[str, ReplicaSim] = field(default_factory=dict)
    backlog: deque[Request] = field(default_factory=deque)
    """Requests that arrived while no replica was ready (served first once one is)."""
    dropped: int = 0
    _trace_pos: int = 0

    def set_replicas(self, wanted: Mapping[str, tuple[ReplicaSpec, float, float]]) -> None:
        """Make the replica set ``{name: (spec, perf_factor, ready_at)}``: new ones start
        empty, gone ones hand their queue back, kept ones keep their state."""
        for name in [n for n in self.replicas if n not in wanted]:
            self.backlog.extendleft(reversed(self.replicas.pop(name).drain()))
        for name, (spec, perf, ready_at) in wanted.items():
            replica = self.replicas.get(name)
            if replica is None or replica.spec != spec:
                fresh = ReplicaSim(spec, perf, ready_at)
                if replica is not None:
                    self.backlog.extendleft(reversed(replica.drain()))
                self.replicas[name] = fresh
            else:
                replica.perf_factor = perf
                replica.ready_at = ready_at

    def replay(self, trace: Sequence[tuple[float, int, int]], start: float, now: float) -> None:
        """Replay ``trace`` (sorted by time) from simulation time ``start``; entries before
        ``now`` are skipped (a replay resumed after an engine restart does not burst)."""
        self.load.trace = trace
        self.load.trace_start = start
        self._trace_pos = bisect.bisect_left([t for t, _, _ in trace], now - start)

    def arrivals(self, start: float, dt: float, rng: Rng) -> list[Request]:
        """Requests arriving in ``[start, start + dt)``."""
        load = self.load
        if load.trace:
            out: list[Request] = []
            trace = load.trace
            end = start + dt - load.trace_start
            while self._trace_pos < len(trace) and trace[self._trace_pos][0] < end:
                at, tokens_in, tokens_out = trace[self._trace_pos]
                self._trace_pos += 1
                out.append(Request(load.trace_start + at, max(1, tokens_in), max(1, tokens_out)))
            return out
        if load.rate <= 0:
            return []
        count = int(rng.poisson(load.rate * dt))
        return [
            Request(start + rng.random() * dt, load.input_tokens, load.output_tokens)
            for _ in range(count)
        ]

    def ready_replicas(self, now: float) -> list[ReplicaSim]:
        """Replicas taking traffic at ``now``."""
        return [r for r in self.replicas.values() if r.ready(now)]

    def _route(self, requests: Iterable[Request], ready: list[ReplicaSim]) -> None:
        # Least outstanding requests per unit of capacity, as a gateway with load-aware
        # balancing (and what keeps a slow pool from queueing as much as a fast one).
        for request in requests:
            best = min(ready, key=ReplicaSim.load_score)
            best.queue.append(request)

    def tick(self, start: float, dt: float, rng: Rng) -> None:
        """Generate arrivals, route them and advance every replica by ``dt``."""
        new = self.arrivals(start, dt, rng)
        ready = self.ready_replicas(start)
        if ready:
            if self.backlog:
                self._route(self.backlog, ready)
                self.backlog.clear()
            self._route(new, ready)
        else:
            room = MAX_BACKLOG - len(self.backlog)
            self.backlog.extend(new[: max(0, room)])
            self.dropped += max(0, len(new) - max(0, room))
        for replica in self.replicas.values():
            replica.tick(start, dt)

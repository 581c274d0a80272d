"""Approximate time synchronisation of message streams (colour image + depth), message-library free.

ROS's ``message_filters.ApproximateTimeSynchronizer`` does this, but message_filters has
no PyPI wheel, so the pose node uses this class where message_filters is not importable
(hand-written for that reason; its policy is simpler: a set is the newest pivot message
whose partners all lie within the tolerance).

Stream 0 is the pivot (the colour image). Whenever a message arrives, the newest pivot
message with a partner within ``tolerance_ns`` in every other stream is emitted with
those partners; it and everything older in every queue is then dropped, older pivots as
``unmatched`` (they lost to a newer complete set). Queues are bounded: a pivot pushed
out of a full queue without a partner also counts as ``unmatched``.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class ApproximateSync:
    def __init__(self, n_streams: int, tolerance_ns: int, callback: Callable[..., None], queue_size: int = 10):
        if n_streams < 1:
            raise ValueError("need at least one stream")
        self.n = n_streams
        self.tolerance_ns = int(tolerance_ns)
        self.callback = callback
        self.queues: list[deque] = [deque(maxlen=max(1, queue_size)) for _ in range(n_streams)]
        self.unmatched = 0  # pivot messages dropped without a partner
        self.emitted = 0
        self._lock = threading.Lock()

    def add(self, stream: int, stamp_ns: int, msg) -> None:
        """Feed one message of ``stream``; calls ``callback(*msgs)`` (in stream order) when a set is complete."""
        with self._lock:
            q = self.queues[stream]
            if stream == 0 and len(q) == q.maxlen:
                self.unmatched += 1
            q.append((int(stamp_ns), msg))
            found = self._match()
        if found is not None:
            self.callback(*found)

    def _match(self):
        pivots = self.queues[0]
        for i in range(len(pivots) - 1, -1, -1):  # newest pivot first
            stamp, pivot = pivots[i]
            picks = []
            for q in self.queues[1:]:
                best = min(q, key=lambda e: abs(e[0] - stamp), default=None)
                if best is None or abs(best[0] - stamp) > self.tolerance_ns:
                    break
                picks.append(best)
            else:
                self.unmatched += i  # older pivots will never be used now
                for _ in range(i + 1):
                    pivots.popleft()
                for q, (s, _) in zip(self.queues[1:], picks):
                    while q and q[0][0] <= s:
                        q.popleft()
                self.emitted += 1
                return [pivot] + [m for _, m in picks]
        return None

    def reset(self) -> None:
        with self._lock:
            for q in self.queues:
                q.clear()

    @property
    def pending(self) -> int:
        """Pivot messages waiting for partners."""
        return len(self.queues[0])

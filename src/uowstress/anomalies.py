"""Isolation-anomaly checker: dependency graph, cycle search, classification, guarantees.

Input is a sequence of :class:`~uowstress.history.Transaction` (from
``History.transactions()`` or built by hand with :func:`uowstress.history.txn`).

Model
-----
* **Versions.** Writes carry unique values, so every read names the write it saw. Databases
  prevent dirty writes, so the version order of an item key is the commit order of its
  committed writers (``commit_index``); the version a transaction installs is its last write of
  the key. ``None`` read means "absent": the initial version, or a version installed by a
  ``del``. For an **append-only list** key (Elle's list-append idea) a read returns the whole
  list, every element names its writer, and the version order is the order of the longest list
  read by a committed transaction, followed by elements nobody read, in commit order. A read
  that is not a prefix of that order is reported as ``incompatible-order``.
* **Which transactions count.** Committed transactions are the graph's nodes. Aborted
  transactions' writes never create edges (reading them is ``G1a``). A transaction whose commit
  outcome is unknown (``info``) is treated as committed only if a committed (or already so
  promoted) transaction read one of its writes, since then it must have committed; it is
  placed at its commit invoke, and keys where that place is ambiguous (another writer committed
  while its outcome was open) get no ww/rw edges. Writes of operations with unknown outcome only
  let reads name them (``wr`` edges, ``G1a``), they join no version order.
* **Edges** between nodes: ``ww`` (Ti installed a version, Tj the next one), ``wr`` (Tj read Ti's
  version), ``rw`` anti-dependency (Ti read a version, Tj installed the next one) and ``prw``
  predicate anti-dependency (Ti's predicate read did not match key k, Tj installed a later version
  of k that matches; needs the predicate, see ``predicates`` below). A read of "absent" on a key
  that also has deletes is ambiguous: it yields no ``wr`` edge, and an ``rw`` edge to the writer
  after the *latest* absent version it could have seen. That shortcut stands for a real ``rw``
  edge followed by ``ww`` edges, so it never changes a cycle's class. With ``op_spans`` (histories
  recorded by :class:`~uowstress.history.History`) a read can only have seen versions whose write
  was sent before the read completed, which narrows this down; hand-built transactions without
  spans get no timing. An "absent" read (or a predicate read missing a key) that no committed
  version after the state before the key's first version explains, while an uncommitted one
  (an aborted transaction's, or one its writer overwrote) could, makes no claim: it may have
  read that uncommitted version (read uncommitted) rather than the state before the first. When
  its transaction began after that first version committed it cannot have seen the state before
  it, and an absent item read is named for the delete it saw: ``G1a`` (aborted) or ``G1b``.
* **Predicates.** A ``pr`` op names its predicate and lists the ``(key, value)`` rows it matched.
  Each returned row is also an item read of that key (item ``wr``/``rw`` edges: updating or
  deleting a returned row is an item conflict, not a phantom). Rows the predicate did *not*
  return can only be reasoned about with the predicate itself: pass
  ``predicates={name: fn(key, value) -> bool}`` to get ``prw`` edges (phantoms, ``G2``). Without
  it, predicate reads still yield ``PMP`` and their item edges. Cost: a read gets one ``prw``
  edge per key it missed, so a predicate read followed by many matching writes (of other keys:
  inserts) would get an edge to each. The edges that point back in commit order are made for
  every read; those that point forward only where they can lie on a cycle (see
  ``_Analysis._later_predicate_edges``), and the findings are the same as with every edge made.
  The work is about the graph's edges and the rows read (with a logarithm); only a read and a
  later matching write in one strongly connected component get their edge. Evaluating the
  predicates costs a call per predicate and item version.

Anomalies (the public names)
----------------------------
Cycles (Adya 1999), one finding per class per strongly connected component, each with a
shortest example cycle (exact for small components; for very large ones the search stops after
a work budget and reports the shortest cycle found so far):

* ``G0`` write cycle: ``ww`` edges only.
* ``G1c`` circular information flow: ``ww``/``wr`` edges, at least one ``wr``.
* ``G-single`` exactly one anti-dependency (``rw`` or ``prw``), the rest ``ww``/``wr``
  (read skew; a lost update is one too).
* ``G-nonadjacent`` two or more anti-dependencies, no two of them next to each other on the
  cycle (Fekete et al. 2005; Cerone and Gotsman 2016: under snapshot isolation every cycle has
  two adjacent anti-dependencies). A long fork is one: two readers each saw one of two
  independent writers and missed the other. Such a cycle is also ``G2-item`` or ``G2``.
* ``G2-item`` two or more anti-dependencies, at least one of them an item one (write skew).
  Adya's definition: one item anti-dependency puts a cycle in G2-item, which repeatable
  read forbids, even when another anti-dependency on it is a predicate one.
* ``G2`` two or more anti-dependencies, at least one a predicate anti-dependency (phantoms).
  A cycle whose only anti-dependency is a predicate one is ``G-single``, as in Adya; one
  with an item anti-dependency too is ``G2-item`` as well.

Other anomalies:

* ``G1a`` aborted read: a committed transaction read a value written by an aborted one.
* ``G1b`` intermediate read: a committed transaction read a value its (committed) writer later
  overwrote in the same transaction (for lists: a read ending before the writer's last append).
* ``P4`` lost update (Berenson et al. 1995): two or more committed transactions read the same
  version of item key x (not an ambiguous "absent") and each wrote x afterwards. Appends are
  excluded: concurrent appends lose nothing.
* ``OTV`` observed transaction vanishes (Cerone et al. 2015's fractured reads; the name from
  the Hermitage project): a committed transaction T saw some write of W, and later in T a read
  of a key W wrote returned a version older than W's (a list read not containing any of W's
  elements). Every OTV also forms a cycle, so it is searched for inside strongly connected
  components only.
* ``PMP`` predicate-many-preceders (Adya 1999; named so by the Hermitage project): within one
  committed transaction T, a predicate read disagrees with an earlier observation by T,
  ignoring keys T itself wrote before it: (a) an earlier read of the same predicate (same name)
  returned different rows; (b) with the predicate given, an earlier item read of k saw a value
  that matches it, and the predicate read does not return k with that value; (c) the predicate
  read returns k with a value other than an earlier item read of k saw. No single snapshot can
  produce any of these.
* ``garbage-read``: a read of a value no transaction wrote (or not yet written by the reading
  transaction itself): the database or the tester is broken.
* ``internal``: a transaction read a key after writing it and did not see its own write.
* ``incompatible-order``: a list read that is not a prefix of the key's list order (or holds an
  element twice).

Guarantees (:data:`FORBIDDEN`): Adya's PL-1 (read uncommitted) forbids G0; PL-2 (read committed)
adds G1a, G1b, G1c; PL-2.99 (repeatable read) adds G-single and G2-item, and we add P4 and OTV;
snapshot isolation (Adya's PL-SI; Berenson et al.; Cerone et al.; Crooks et al. 2017) forbids
read committed's set plus G-single, G-nonadjacent, P4, OTV and PMP but permits write skew
(G2-item, G2) whose anti-dependencies are adjacent;
serializable (PL-3) forbids everything. ``garbage-read`` and ``internal`` are forbidden at every
level, ``incompatible-order`` from read committed up (reading uncommitted appends can legitimately
produce it).
"""

from __future__ import annotations

import gc
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from heapq import heappop, heappush
from itertools import compress, count, groupby, islice
from operator import itemgetter, le
from types import MappingProxyType
from typing import TypeAlias, cast

from uowstress.history import Op, OpValue, Scalar, Transaction

__all__ = [
    "ALWAYS_FORBIDDEN",
    "ANOMALIES",
    "DESCRIPTIONS",
    "FORBIDDEN",
    "CheckResult",
    "Edge",
    "Finding",
    "Guarantee",
    "Predicate",
    "analyse",
    "check",
]

Predicate: TypeAlias = Callable[[str, Scalar], bool]
#: (from transaction id, to transaction id, "ww" | "wr" | "rw" | "prw", key)
Edge: TypeAlias = tuple[int, int, str, str]

G0 = "G0"
G1A = "G1a"
G1B = "G1b"
G1C = "G1c"
G_SINGLE = "G-single"
G_NONADJACENT = "G-nonadjacent"
G2_ITEM = "G2-item"
G2 = "G2"
P4 = "P4"
OTV = "OTV"
PMP = "PMP"
GARBAGE = "garbage-read"
INTERNAL = "internal"
INCOMPATIBLE = "incompatible-order"

#: Every anomaly name the checker can report, roughly from most to least severe.
ANOMALIES: tuple[str, ...] = (
    GARBAGE,
    INTERNAL,
    G0,
    INCOMPATIBLE,
    G1A,
    G1B,
    G1C,
    OTV,
    P4,
    PMP,
    G_SINGLE,
    G_NONADJACENT,
    G2_ITEM,
    G2,
)
_ORDER = {name: i for i, name in enumerate(ANOMALIES)}

#: Each anomaly in a few plain words, for messages.
DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        GARBAGE: "a read of a value never written",
        INTERNAL: "a transaction missed its own write",
        G0: "dirty write",
        INCOMPATIBLE: "reads disagree on the order of appends",
        G1A: "aborted read",
        G1B: "intermediate read",
        G1C: "circular information flow",
        OTV: "observed transaction vanishes",
        P4: "lost update",
        PMP: "predicate-many-preceders",
        G_SINGLE: "read skew",
        G_NONADJACENT: "non-adjacent anti-dependencies, as in a long fork",
        G2_ITEM: "write skew",
        G2: "phantom write skew",
    }
)

#: Forbidden whatever the guarantee: they mean the database or the tester is broken.
ALWAYS_FORBIDDEN: frozenset[str] = frozenset({GARBAGE, INTERNAL})


class Guarantee(StrEnum):
    """The isolation a Unit of Work promises."""

    READ_UNCOMMITTED = "read uncommitted"
    READ_COMMITTED = "read committed"
    REPEATABLE_READ = "repeatable read"
    SNAPSHOT = "snapshot"
    SERIALIZABLE = "serializable"


_RU = ALWAYS_FORBIDDEN | {G0}
_RC = _RU | {G1A, G1B, G1C, INCOMPATIBLE}

#: The anomalies each guarantee forbids (sources in the module docstring).
FORBIDDEN: Mapping[Guarantee, frozenset[str]] = MappingProxyType(
    {
        Guarantee.READ_UNCOMMITTED: frozenset(_RU),
        Guarantee.READ_COMMITTED: frozenset(_RC),
        Guarantee.REPEATABLE_READ: frozenset(_RC | {G_SINGLE, G2_ITEM, P4, OTV}),
        Guarantee.SNAPSHOT: frozenset(_RC | {G_SINGLE, G_NONADJACENT, P4, OTV, PMP}),
        Guarantee.SERIALIZABLE: frozenset(ANOMALIES),
    }
)


@dataclass(frozen=True)
class Finding:
    """One anomaly: the transactions involved (cycle order for cycles), keys, edges, words."""

    anomaly: str
    txns: tuple[int, ...]
    keys: tuple[str, ...]
    edges: tuple[Edge, ...]
    explanation: str


@dataclass(frozen=True)
class CheckResult:
    """The findings of one check, split by what ``guarantee`` forbids."""

    guarantee: Guarantee
    findings: tuple[Finding, ...]
    forbidden: tuple[Finding, ...]
    permitted: tuple[Finding, ...]
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no finding is forbidden by the guarantee."""
        return not self.forbidden


def analyse(
    transactions: Sequence[Transaction],
    predicates: Mapping[str, Predicate] | None = None,
) -> list[Finding]:
    """Every anomaly in ``transactions``, whatever the guarantee.

    Raises ``ValueError`` for input the model cannot interpret (a committed transaction without
    a commit position, a value written twice to a key, a key both written and appended to).
    """
    # The checker allocates millions of small objects and frees them together; the cyclic
    # garbage collector would rescan them over and over (time superlinear in history size),
    # and nothing here creates reference cycles, so it is paused for the run.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Analysis(transactions, predicates or {}).run()
    finally:
        if was_enabled:
            gc.enable()


def check(
    transactions: Sequence[Transaction],
    guarantee: Guarantee | str,
    predicates: Mapping[str, Predicate] | None = None,
) -> CheckResult:
    """Analyse ``transactions`` and judge the findings against ``guarantee``."""
    try:
        g = Guarantee(guarantee)
    except ValueError:
        valid = ", ".join(repr(x.value) for x in Guarantee)
        raise ValueError(f"unknown guarantee {guarantee!r}: use one of {valid}") from None
    findings = tuple(analyse(transactions, predicates))
    forbidden_names = FORBIDDEN[g]
    return CheckResult(
        guarantee=g,
        findings=findings,
        forbidden=tuple(f for f in findings if f.anomaly in forbidden_names),
        permitted=tuple(f for f in findings if f.anomaly not in forbidden_names),
        counts=MappingProxyType(dict(Counter(f.anomaly for f in findings))),
    )


# ---------------------------------------------------------------------------------------------
# Implementation

_WW, _WR, _RW, _PRW = 0, 1, 2, 3
# A write no committed state holds: (value, when it was sent, tx, op position).
_DirtyWrite: TypeAlias = tuple[Scalar | None, int, int, int]
# Versions asked about together by every predicate (see _Analysis._matching): enough to pay for
# a step through the predicates, few enough to stay in a CPU cache.
_PREDICATE_BLOCK = 512
_KIND = ("ww", "wr", "rw", "prw")
_M_WW, _M_WR, _M_RW, _M_PRW = 1, 2, 4, 8

_M_ANTI = _M_RW | _M_PRW
_M_ALL = _M_WW | _M_WR | _M_ANTI

#: Per cycle class: (name, kinds of the candidate edge, kinds allowed on the way back, kinds of
#: which the way back needs at least one, kinds that may not follow one another on the cycle).
_CLASSES: tuple[tuple[str, int, int, int, int], ...] = (
    (G0, _M_WW, _M_WW, 0, 0),
    (G1C, _M_WR, _M_WW | _M_WR, 0, 0),
    (G_SINGLE, _M_ANTI, _M_WW | _M_WR, 0, 0),
    (G_NONADJACENT, _M_ANTI, _M_ALL, _M_ANTI, _M_ANTI),
    (G2_ITEM, _M_RW, _M_ALL, _M_ANTI, 0),
    (G2, _M_PRW, _M_ALL, _M_ANTI, 0),
)
_CLASS_SUMMARY = {
    G0: "only write-write dependencies: their writes interleaved (dirty write)",
    G1C: "only write-write and write-read dependencies: each saw the other's effects "
    "(circular information flow)",
    G_SINGLE: "exactly one anti-dependency: no single snapshot explains what was read and "
    "written (read skew, lost update)",
    G_NONADJACENT: "two or more anti-dependencies, no two of them adjacent: no order of the "
    "transactions' snapshots explains what they saw (a long fork, for one), which snapshot "
    "isolation forbids",
    G2_ITEM: "two or more anti-dependencies, at least one of them on an item: each missed the "
    "other's write (write skew), so no serial order explains it",
    G2: "anti-dependencies including a predicate one: a predicate read missed a write (phantom), "
    "so no serial order explains it",
}

# Per SCC and class, the cycle search stops trying candidate edges after this many edge visits
# (at least two full searches of the component), which keeps big components near-linear.
_MIN_BUDGET = 20_000


def _fmt(v: OpValue) -> str:
    if v is None:
        return "absent"
    if isinstance(v, tuple):
        return "[" + ", ".join(repr(x) for x in v) + "]"
    return repr(v)


def _tarjan(adj: Sequence[Sequence[int]]) -> list[int]:
    """Strongly connected component id of every node 0..n-1 (iterative Tarjan)."""
    n = len(adj)
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    comp = [-1] * n
    stack: list[int] = []
    counter = 0
    ncomp = 0
    for root in range(n):
        if index[root] != -1:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            v, i = work[-1]
            succ = adj[v]
            if i < len(succ):
                work[-1] = (v, i + 1)
                u = succ[i]
                if index[u] == -1:
                    index[u] = low[u] = counter
                    counter += 1
                    stack.append(u)
                    on_stack[u] = True
                    work.append((u, 0))
                elif on_stack[u] and index[u] < low[v]:
                    low[v] = index[u]
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                if low[v] < low[parent]:
                    low[parent] = low[v]
            if low[v] == index[v]:
                while True:
                    u = stack.pop()
                    on_stack[u] = False
                    comp[u] = ncomp
                    if u == v:
                        break
                ncomp += 1
    return comp


_LocalAdj: TypeAlias = list[list[tuple[int, int, str]]]
#: A list read: (transaction, op position, own appends before it, the elements it returned)
_ListRead: TypeAlias = tuple[int, int, int, tuple[Scalar, ...]]


def _bfs_back(
    ladj: _LocalAdj,
    start: int,
    goal: int,
    allowed: int,
    need: int,
    budget: list[int],
    apart: int = 0,
    after: int = 0,
) -> list[tuple[int, int, int, str]] | None:
    """Shortest walk start -> goal over ``allowed`` kinds holding one of ``need`` (if any),
    with no two edges of ``apart`` kinds in a row, counting the edge of kind ``after`` that
    enters ``start`` and leaves ``goal`` (the candidate edge that closes the cycle).

    Returns the edges (from, to, kind, key) of a simple path, or None. The goal is entered only
    at the end, and a walk that repeats a node is rejected, so the caller always gets a simple
    cycle.
    """
    # A state's flags: 1 = holds one of ``need``, 2 = entered by an edge of ``apart`` kinds.
    closing = (apart >> after) & 1
    init = (1 if need == 0 else 0) | (2 * closing)
    parent: dict[tuple[int, int], tuple[int, int, int, str] | None] = {(start, init): None}
    frontier = [(start, init)]
    while frontier:
        nxt: list[tuple[int, int]] = []
        for u, f in frontier:
            for v, kind, key in ladj[u]:
                budget[0] -= 1
                if not (allowed >> kind) & 1:
                    continue
                last = (apart >> kind) & 1
                if last and f & 2:
                    continue
                nf = (f & 1) | ((need >> kind) & 1) | (2 * last)
                if v == goal and (not nf & 1 or (last and closing)):
                    continue
                if v == start:
                    continue
                state = (v, nf)
                if state in parent:
                    continue
                parent[state] = (u, f, kind, key)
                if v == goal:
                    path: list[tuple[int, int, int, str]] = []
                    cur: tuple[int, int] | None = state
                    while cur is not None:
                        p = parent[cur]
                        if p is None:
                            break
                        path.append((p[0], cur[0], p[2], p[3]))
                        cur = (p[0], p[1])
                    path.reverse()
                    seen = {start}
                    for _, to, _, _ in path:
                        if to in seen:
                            return None
                        seen.add(to)
                    return path
                nxt.append(state)
        frontier = nxt
    return None


#: What a segment stands for: (rank of the key, key, node of its target version, 1 when the
#: segment is the state before the key's first version, else 0).
_SegItem: TypeAlias = tuple[int, str, int, int]
#: A segment of predicate-read completion times (see ``_Analysis._predicate_matches``): the
#: node that installed its target version, its bounds (lo, hi] and what it stands for.
_Segment: TypeAlias = tuple[int, float, float, _SegItem]


def _stab(
    segments: Sequence[_Segment], queries: Sequence[tuple[int, float, int]]
) -> dict[int, list[_SegItem]]:
    """For each query (threshold, point, id), the queries in ascending threshold order, the
    items of the segments (key, lo, hi, item), given in ascending key order, whose key is below
    the threshold and whose bounds hold the point: lo < point <= hi. Queries that get none are
    left out.

    A segment enters a segment tree over the queries' points once the threshold passes its
    key, in the O(log) nodes that cover its bounds; a query collects the nodes on its point's
    path to the root (``_stab_tree``). The time is O((segments + queries) log queries) plus the
    items reported, where looking at every segment for every query would take their product.
    When the points rise with the thresholds (reads that complete in commit order, as in a
    serial history) a sweep does the same in about a third of the time (``_stab_in_order``).
    """
    points = [point for _, point, _ in queries]
    if all(map(le, points, islice(points, 1, None))):
        return _stab_in_order(segments, queries)
    return _stab_tree(segments, queries)


def _stab_tree(
    segments: Sequence[_Segment], queries: Sequence[tuple[int, float, int]]
) -> dict[int, list[_SegItem]]:
    """``_stab`` with a segment tree, whatever the order of the points."""
    points = sorted({point for _, point, _ in queries})
    size = 1
    while size < len(points):
        size *= 2
    tree: list[list[_SegItem] | None] = [None] * (2 * size)
    found: dict[int, list[_SegItem]] = {}
    j, n_segments = 0, len(segments)
    for threshold, point, qid in queries:
        while j < n_segments and segments[j][0] < threshold:
            _, lo, hi, item = segments[j]
            j += 1
            a = bisect_right(points, lo) + size
            b = bisect_right(points, hi) + size
            while a < b:
                if a & 1:
                    bucket = tree[a]
                    if bucket is None:
                        tree[a] = [item]
                    else:
                        bucket.append(item)
                    a += 1
                if b & 1:
                    b -= 1
                    bucket = tree[b]
                    if bucket is None:
                        tree[b] = [item]
                    else:
                        bucket.append(item)
                a >>= 1
                b >>= 1
        p = bisect_left(points, point) + size
        out: list[_SegItem] = []
        while p:
            bucket = tree[p]
            if bucket is not None:
                out += bucket
            p >>= 1
        if out:
            found[qid] = out
    return found


def _stab_in_order(
    segments: Sequence[_Segment], queries: Sequence[tuple[int, float, int]]
) -> dict[int, list[_SegItem]]:
    """``_stab`` for queries whose points never fall: a segment whose upper bound a point has
    passed is passed for good, so a sweep keeps the segments that hold the current point
    (``alive``), those whose lower bound it has yet to pass (``waiting``, by lower bound) and
    when each alive one ends (``ending``, by upper bound)."""
    alive: dict[int, _SegItem] = {}
    waiting: list[tuple[float, int]] = []
    ending: list[tuple[float, int]] = []
    found: dict[int, list[_SegItem]] = {}
    j, n_segments = 0, len(segments)
    for threshold, point, qid in queries:
        while j < n_segments and segments[j][0] < threshold:
            _, lo, hi, item = segments[j]
            if hi >= point:  # else no later point falls in it either
                if lo < point:
                    alive[j] = item
                    heappush(ending, (hi, j))
                else:
                    heappush(waiting, (lo, j))
            j += 1
        while waiting and waiting[0][0] < point:
            s = heappop(waiting)[1]
            _, _, hi, item = segments[s]
            if hi >= point:
                alive[s] = item
                heappush(ending, (hi, s))
        while ending and ending[0][0] < point:
            del alive[heappop(ending)[1]]
        if alive:
            found[qid] = list(alive.values())
    return found


class _Write:
    """One indexed write. ``vidx``: its version's index in the key's order (installed item
    versions only, else -1); ``final``: the writer's last write of the key; ``indet``: the
    operation's outcome is unknown."""

    __slots__ = ("final", "indet", "key", "pos", "tx", "value", "vidx")

    def __init__(self, key: str, value: Scalar | None, tx: int, pos: int, indet: bool) -> None:
        self.key = key
        self.value = value
        self.tx = tx
        self.pos = pos
        self.vidx = -1
        self.final = False
        self.indet = indet


class _Analysis:
    """One run of the checker; attributes are the indexes built along the way."""

    def __init__(self, transactions: Sequence[Transaction], predicates: Mapping[str, Predicate]):
        self.txs: list[Transaction] = list(transactions)
        self.predicates = predicates
        self.findings: list[Finding] = []
        # The graph as parallel edge lists (src node, dst node, kind, key): cheap to append to,
        # and only edges inside strongly connected components are ever looked at again.
        self.e_src: list[int] = []
        self.e_dst: list[int] = []
        self.e_kind: list[int] = []
        self.e_key: list[str] = []
        # id of a list of version indices -> (the list, suffix minima of its invoke indices)
        self.sent_min: dict[int, tuple[list[int], list[int]]] = {}
        # Predicate anti-dependencies (see _predicate_matches): per predicate, the targets of
        # its segments (ascending) and the segments; per predicate read with a definition, by
        # a node (op id = tx * stride + position), the (rank, key, target) of each segment
        # that holds it and points back in commit order; the reads as (node, predicate, tx,
        # position, completion event), by node.
        self.pr_segs: dict[str, tuple[list[int], list[_Segment]]] = {}
        self.pr_back: dict[int, list[_SegItem]] = {}
        self.pr_queries: list[tuple[int, str, int, int, int | None]] = []
        # Where each prw edge stands in the order the graph's edges were made: the edge count
        # when its read's edges began (per read), the read (reads are met in op id order) and
        # the key's rank. The edges made late, in _cycles, are put back there, so the cycle
        # search meets the edges in the same order whichever pass made them.
        self.pr_slot: dict[int, int] = {}
        self.pr_key: dict[int, tuple[int, int, int]] = {}
        # The runs of nodes (lo, hi) where cycles can lie, in order (see _cycles).
        self.regions: list[tuple[int, int]] = []
        # Writes no committed state holds, by key, deletes and values apart; built only when a
        # read needs them (see _dirty).
        self._dirty_writes: dict[str, tuple[list[_DirtyWrite], list[_DirtyWrite]]] | None = None

    # -- driver ------------------------------------------------------------------------------

    def run(self) -> list[Finding]:
        self._index()
        self._promote()
        self._shadow_writes()
        self._order_nodes()
        self._item_versions()
        self._list_orders()
        self._predicate_matches()
        self._reads()
        self._lost_updates()
        self._cycles()
        # By class, then by transactions: the same findings come out in the same order
        # however the graph was walked to find them.
        self.findings.sort(key=lambda f: (_ORDER.get(f.anomaly, len(_ORDER)), f.txns, f.keys))
        return self.findings

    def _find(
        self,
        anomaly: str,
        txns: Iterable[int],
        keys: Iterable[str],
        edges: Iterable[Edge],
        explanation: str,
    ) -> None:
        self.findings.append(Finding(anomaly, tuple(txns), tuple(keys), tuple(edges), explanation))

    def _name(self, tx: int) -> str:
        return f"T{self.txs[tx].id}"

    def _edge(self, src: int, dst: int, kind: int, key: str) -> None:
        self.e_src.append(src)
        self.e_dst.append(dst)
        self.e_kind.append(kind)
        self.e_key.append(key)

    # -- 1. index writes ---------------------------------------------------------------------

    def _index(self) -> None:
        self.by_id: dict[int, int] = {}
        # Writes by value: values are usually unique across keys, and a dict keyed by the value
        # alone is much cheaper than one keyed by (key, value); a value reused under another
        # key goes to the second dict.
        self.by_value: dict[Scalar, _Write] = {}
        self.by_key_value: dict[tuple[str, Scalar], _Write] = {}
        # Per tx: item key -> its last completed write (a delete is a write of None).
        self.finals: list[dict[str, _Write]] = []
        self.item_keys: set[str] = set()
        self.list_keys: set[str] = set()
        self.list_appends: dict[str, list[_Write]] = {}
        # list key -> (tx, op position, how many of its own appends to the key precede the read)
        self.list_reads: dict[str, list[_ListRead]] = {}
        self.unknown_keys: set[str] = set()
        # predicate name -> (tx, op position) of each predicate read of it
        self.pr_reads: dict[str, list[tuple[int, int]]] = {}
        # What later passes need of each transaction, gathered here so that they need not walk
        # the transactions again (the history is the biggest thing in memory).
        self.committed: list[bool] = []
        self.commit_of: list[int | None] = []
        self.id_of: list[int] = []
        self.may_shadow: list[int] = []  # unknown outcome, or operations with one
        longest = 0
        by_id = self.by_id
        by_value = self.by_value
        list_reads = self.list_reads
        list_appends = self.list_appends
        pr_reads = self.pr_reads
        finals = self.finals
        for i, t in enumerate(self.txs):
            if t.id in by_id:
                raise ValueError(f"transaction id {t.id} appears twice: give each a unique id")
            by_id[t.id] = i
            status = t.status
            self.committed.append(status == "committed")
            self.commit_of.append(t.commit_index)
            self.id_of.append(t.id)
            if status == "unknown" or (status == "committed" and t.indeterminate):
                self.may_shadow.append(i)
            fin: dict[str, _Write] = {}
            last_app: dict[str, _Write] | None = None
            if len(t.ops) > longest:
                longest = len(t.ops)
            for pos, op in enumerate(t.ops):
                kind = op.kind
                if kind == "r":
                    v = op.value
                    if v.__class__ is tuple:
                        k = op.key
                        # Own appends before the read: the read must end with exactly these.
                        n_own = 0
                        if last_app is not None and k in last_app:
                            n_own = sum(1 for o in t.ops[:pos] if o.kind == "append" and o.key == k)
                        reads = list_reads.get(k)
                        if reads is None:
                            reads = list_reads[k] = []
                        reads.append((i, pos, n_own, v))
                    continue
                k = op.key
                if kind == "w" or kind == "ins":
                    v = op.value
                    if not isinstance(v, int | str):
                        raise _bad_value(t.id, op)
                    w = _Write(k, v, i, pos, False)
                    if by_value.setdefault(v, w) is not w:
                        self._collide(w)
                    fin[k] = w
                elif kind == "append":
                    v = op.value
                    if not isinstance(v, int | str):
                        raise _bad_value(t.id, op)
                    w = _Write(k, v, i, pos, False)
                    if by_value.setdefault(v, w) is not w:
                        self._collide(w)
                    if last_app is None:
                        last_app = {}
                    last_app[k] = w
                    apps = list_appends.get(k)
                    if apps is None:
                        apps = list_appends[k] = []
                    apps.append(w)
                elif kind == "del":
                    fin[k] = _Write(k, None, i, pos, False)
                else:
                    preds = pr_reads.get(k)
                    if preds is None:
                        preds = pr_reads[k] = []
                    preds.append((i, pos))
            for w in fin.values():
                w.final = True
            self.item_keys.update(fin)
            if last_app is not None:
                for w in last_app.values():
                    w.final = True
                self.list_keys.update(last_app)
            for j, op in enumerate(t.indeterminate):
                if (
                    op.kind in ("w", "ins", "append")
                    and isinstance(op.value, int | str)
                    and self._lookup(op.key, op.value) is None
                ):
                    self._collide(_Write(op.key, op.value, i, len(t.ops) + j, True))
            if status == "unknown":
                self.unknown_keys.update(op.key for op in t.ops if op.kind not in ("r", "pr"))
                self.unknown_keys.update(op.key for op in t.indeterminate)
            finals.append(fin)
        self.stride = 1 + longest
        self.list_keys.update(list_reads)
        both = self.item_keys & self.list_keys
        if both:
            raise ValueError(
                f"keys {sorted(both)[:5]} are both written and used as lists: keep list keys "
                "append-only and read them whole"
            )

    def _collide(self, w: _Write) -> None:
        """Index ``w`` whose value is already indexed (under another key, or a duplicate)."""
        assert w.value is not None
        prev = self.by_value.setdefault(w.value, w)
        if prev is not w and prev.key != w.key:
            prev = self.by_key_value.setdefault((w.key, w.value), w)
        if prev is not w:
            raise ValueError(
                f"{w.value!r} was written to {w.key} twice (T{self.txs[prev.tx].id} and "
                f"T{self.txs[w.tx].id}): give every write a unique value so each read "
                "names its writer"
            )

    def _lookup(self, k: str, v: Scalar) -> _Write | None:
        """The write of ``v`` to ``k``, if any."""
        w = self.by_value.get(v)
        if w is not None and w.key == k:
            return w
        return self.by_key_value.get((k, v)) if self.by_key_value else None

    def _writer(self, k: str, v: Scalar) -> int:
        """The tx that wrote ``v`` to ``k``, or -1."""
        w = self._lookup(k, v)
        return -1 if w is None else w.tx

    # -- 2. promote unknown transactions that were observed ----------------------------------

    def _promote(self) -> None:
        n = len(self.txs)
        self.is_node = self.committed
        self.promoted: set[int] = set()
        unknown_keys = self.unknown_keys
        if not unknown_keys:
            return
        work = [i for i in range(n) if self.is_node[i]]
        txs = self.txs
        while work:
            i = work.pop()
            for op in txs[i].ops:
                seen: list[int]
                if op.kind == "r":
                    v = op.value
                    if op.key not in unknown_keys or v is None or isinstance(v, frozenset):
                        continue
                    if isinstance(v, tuple):
                        seen = [self._writer(op.key, e) for e in v]
                    else:
                        seen = [self._writer(op.key, v)]
                elif op.kind == "pr":
                    assert isinstance(op.value, frozenset)
                    seen = [self._writer(k, x) for k, x in op.value if k in unknown_keys]
                else:
                    continue
                for wtx in seen:
                    if wtx >= 0 and not self.is_node[wtx] and txs[wtx].status == "unknown":
                        self.is_node[wtx] = True
                        self.promoted.add(wtx)
                        work.append(wtx)

    def _shadow_writes(self) -> None:
        """Writes that may have taken effect but are in no version order: every write of an
        unknown transaction nobody observed, and every operation with an unknown outcome of a
        transaction that did or may have committed. Item reads that name a version are not
        affected (a missed version only stands between two known ones), but "absent" reads and
        predicate non-matches may have seen such a version, so those make no claim when a
        shadow could be what they saw."""
        # key -> (value or None for a delete, event index the write was sent at, -1 unknown)
        self.shadows: dict[str, list[tuple[Scalar | None, int]]] = {}
        # Committed transactions without operations of unknown outcome have nothing to add.
        for i in self.may_shadow:
            t = self.txs[i]
            if not self.is_node[i]:
                for pos, op in enumerate(t.ops):
                    if op.kind in ("w", "ins", "del"):
                        sent = t.op_spans[pos][0] if t.op_spans else -1
                        self._shadow(op.key, op.value, sent)
            for op in t.indeterminate:
                if op.kind in ("w", "ins", "del"):
                    self._shadow(op.key, op.value, -1)

    def _shadow(self, k: str, v: OpValue, sent: int) -> None:
        assert not isinstance(v, tuple | frozenset)
        self.shadows.setdefault(k, []).append((v, sent))

    def _shadowed(self, k: str, done: int | None, fits: Callable[[Scalar | None], bool]) -> bool:
        """Whether a shadow write of ``k`` satisfying ``fits`` may have been seen by a read that
        completed at event ``done`` (None: no timing)."""
        for v, sent in self.shadows.get(k, ()):
            if fits(v) and (done is None or sent < 0 or sent < done):
                return True
        return False

    # -- 3. node order = commit order --------------------------------------------------------

    def _order_nodes(self) -> None:
        if self.promoted:
            self._order_nodes_with_spans()
            return
        # The common case, every node acknowledged its commit: sort by commit position, ties by
        # id (two stable sorts on plain int keys, much cheaper than a key tuple per node).
        order = list(compress(range(len(self.txs)), self.is_node))
        commit = self.commit_of
        for i in order:
            if commit[i] is None:
                raise ValueError(
                    f"committed transaction T{self.id_of[i]} has no commit_index: record its "
                    "commit (or pass commit=...) so the checker knows the version order"
                )
        order.sort(key=self.id_of.__getitem__)
        order.sort(key=cast(list[int], commit).__getitem__)  # none is None (checked above)
        self.tx_of: list[int] = order
        self.node_of = [-1] * len(self.txs)
        for n, i in enumerate(order):
            self.node_of[i] = n
        # Commit spans are only looked at next to promoted transactions (there are none).
        self.span_of: list[tuple[float, float]] = []

    def _order_nodes_with_spans(self) -> None:
        inf = float("inf")
        spans: dict[int, tuple[float, float]] = {}
        for i, t in enumerate(self.txs):
            if not self.is_node[i]:
                continue
            if i in self.promoted:
                lo = t.commit_invoke_index
                if lo is None:
                    spans[i] = (inf, inf)
                else:
                    hi = t.end_index if t.end_index is not None else lo
                    spans[i] = (lo, max(lo, hi))
            else:
                if t.commit_index is None:
                    raise ValueError(
                        f"committed transaction T{t.id} has no commit_index: record its commit "
                        "(or pass commit=...) so the checker knows the version order"
                    )
                spans[i] = (t.commit_index, t.commit_index)
        order = sorted(spans, key=lambda i: (spans[i], self.txs[i].id))
        self.tx_of = order
        self.node_of = [-1] * len(self.txs)
        for n, i in enumerate(order):
            self.node_of[i] = n
        self.span_of = [spans[i] for i in order]

    # -- 4. item version orders and ww edges -------------------------------------------------

    def _item_versions(self) -> None:
        self.vers: dict[str, list[int]] = {}
        self.dels: dict[str, list[int]] = {}
        self.uncertain: set[str] = set()
        vers = self.vers
        finals = self.finals
        for n, i in enumerate(self.tx_of):
            for k, w in finals[i].items():
                vl = vers.get(k)
                if vl is None:
                    vl = vers[k] = []
                w.vidx = len(vl)
                if w.value is None:
                    self.dels.setdefault(k, []).append(len(vl))
                vl.append(n)
        # An unknown transaction's commit happened somewhere in its span: if another writer of
        # the key committed inside that span, the order of the two is not known.
        promoted_nodes = {self.node_of[i] for i in self.promoted}
        if promoted_nodes:
            for k, vl in vers.items():
                for n in vl:
                    if n not in promoted_nodes:
                        continue
                    lo, hi = self.span_of[n]
                    others = [m for m in vl if m != n]
                    if any(
                        self.span_of[m][0] <= hi and lo <= self.span_of[m][1] for m in others
                    ) or (lo == float("inf") and others):
                        self.uncertain.add(k)
                        break
        e_src, e_dst, e_kind, e_key = self.e_src, self.e_dst, self.e_kind, self.e_key
        for k, vl in vers.items():
            if len(vl) < 2 or k in self.uncertain:
                continue
            e_src.extend(vl[:-1])
            e_dst.extend(vl[1:])
            e_kind.extend([_WW] * (len(vl) - 1))
            e_key.extend([k] * (len(vl) - 1))

    def _installed(self, k: str, node: int) -> _Write | None:
        """The version of item ``k`` that ``node`` installed, if any."""
        return self.finals[self.tx_of[node]].get(k)

    def _version_invoke(self, k: str, idx: int) -> int:
        """Event index at which the write installing version ``idx`` of ``k`` was sent."""
        i = self.tx_of[self.vers[k][idx]]
        spans = self.txs[i].op_spans
        if not spans:
            return -1
        return spans[self.finals[i][k].pos][0]

    def _absent_upper(self, k: str, i: int, pos: int) -> tuple[int, bool] | None:
        """Latest absent version of item ``k`` that tx ``i``'s read at ``pos`` could have seen,
        and whether it could have seen more than one (ambiguous); None if it may have seen an
        absent version outside the known order (a shadow delete)."""
        spans = self.txs[i].op_spans
        done = spans[pos][1] if spans else None
        if self._shadowed(k, done, lambda v: v is None):
            return None
        dl = self.dels.get(k)
        if not dl:
            idx = -1
        elif done is None:
            return dl[-1], True
        else:
            idx = self._latest_sent_before(k, dl, done)
            if idx >= 0:
                return idx, True
        if self._dirty(k, i, done):
            return None
        return -1, False

    def _dirty(
        self, k: str, i: int, done: int | None, fits: Callable[[Scalar], bool] | None = None
    ) -> tuple[int, int] | None:
        """The first write of ``k`` (in transaction order) that no committed state holds, sent
        before event ``done`` (None: no timing) by a transaction other than ``i``: one of an
        aborted transaction, or one its committed writer overwrote later; a delete, or a
        value satisfying ``fits`` (None: deletes only). (tx, op position), or None.

        A read that saw no committed version of ``k`` after the state before the first may
        have seen such a write instead (read uncommitted): it then makes no claim about
        which version it missed."""
        if self._dirty_writes is None:
            self._dirty_writes = {}
            for j, t in enumerate(self.txs):
                aborted = t.status == "aborted"
                if not aborted and not self.is_node[j]:
                    continue  # unknown outcome: a shadow (see _shadow_writes)
                fin = self.finals[j]
                for p, op in enumerate(t.ops):
                    if op.kind in ("w", "ins", "del") and (aborted or fin[op.key].pos != p):
                        sent = t.op_spans[p][0] if t.op_spans else -1
                        v = op.value
                        assert v is None or isinstance(v, int | str)
                        lists = self._dirty_writes.get(op.key)
                        if lists is None:
                            lists = self._dirty_writes[op.key] = ([], [])
                        # Deletes apart: an absent read asks only about them, and scanning
                        # every dirty value of a key for each such read made the time grow
                        # with the square of the history.
                        lists[v is not None].append((v, sent, j, p))
        lists = self._dirty_writes.get(k)
        if lists is None:
            return None
        deletes, values = lists
        found: tuple[int, int] | None = None
        for entries in [deletes] if fits is None else [deletes, values]:
            for v, sent, j, p in entries:
                if j == i or (done is not None and sent >= done):
                    continue
                if v is None or (fits is not None and fits(v)):
                    if found is None or (j, p) < found:
                        found = j, p
                    break
        return found

    def _commit_position(self, node: int) -> int:
        """The commit position of ``node`` (-1 when not known: a promoted transaction)."""
        c = self.commit_of[self.tx_of[node]]
        return -1 if c is None else c

    def _began_after_first(self, k: str, i: int) -> bool:
        """Whether tx ``i`` began after the first committed version of item ``k`` was
        committed: then no read of it saw the state before that version (a snapshot is never
        older than its transaction), and "absent" was an uncommitted delete."""
        vl = self.vers.get(k)
        began = self.txs[i].begin_index
        if not vl or began is None:
            return False
        first = self._commit_position(vl[0])
        return 0 <= first < began

    def _dirty_absent(self, i: int, pos: int, k: str) -> None:
        """Tx ``i`` read ``k`` as absent at ``pos``, began after its first version committed,
        and saw no committed delete: name the uncommitted delete it saw, an aborted one (G1a)
        or one its committed writer undid later (G1b)."""
        spans = self.txs[i].op_spans
        done = spans[pos][1] if spans else None
        if not self._began_after_first(k, i) or self._shadowed(k, done, lambda v: v is None):
            return
        found = self._dirty(k, i, done)
        if found is None:
            return
        j, _ = found
        t = self.txs[j]
        if t.status == "aborted":
            anomaly, said = (
                G1A,
                (
                    f"{self._name(i)} committed after reading {k} = absent, deleted by "
                    f"{self._name(j)}, which did not commit (aborted): an aborted read"
                ),
            )
        else:
            anomaly, said = (
                G1B,
                (
                    f"{self._name(i)} read {k} = absent, deleted by {self._name(j)}, which later "
                    f"wrote {k} = {_fmt(self.finals[j][k].value)} in the same transaction: "
                    f"{self._name(i)} saw an intermediate state"
                ),
            )
        edge = (t.id, self.txs[i].id, "wr", k)
        self._find(anomaly, [t.id, self.txs[i].id], [k], [edge], said)

    def _latest_sent_before(self, k: str, idxs: list[int], done: int | None) -> int:
        """The last of the versions ``idxs`` of ``k`` (ascending) whose write was sent before
        event ``done`` (None: no timing, any of them), or -1.

        Found by bisecting the suffix minima of the writes' invoke indices, built once per list:
        scanning back from the newest version made many reads of a key with many versions
        quadratic.
        """
        if done is None:
            return idxs[-1] if idxs else -1
        cached = self.sent_min.get(id(idxs))
        if cached is None:
            mins = [self._version_invoke(k, idx) for idx in idxs]
            for j in range(len(mins) - 2, -1, -1):
                if mins[j + 1] < mins[j]:
                    mins[j] = mins[j + 1]
            # The list is kept alongside so that its id is not reused while cached.
            cached = self.sent_min[id(idxs)] = (idxs, mins)
        # mins is ascending; mins[j] < done iff some version from j on was sent before done,
        # so the last such j is the one wanted.
        j = bisect_left(cached[1], done) - 1
        return idxs[j] if j >= 0 else -1

    # -- 5. list orders ----------------------------------------------------------------------

    def _list_orders(self) -> None:
        # (tx, op position) of a good list read by a node -> how many elements of the key's
        # order it saw (its committed foreign elements are exactly that prefix of the order).
        # Keys are op ids (tx * stride + position): int keys hash cheaply and in order.
        # Values are length * 2 + 1 for reads the fast path verified whole (they hold no
        # garbage, aborted or misplaced own element, so the read pass skips per-element checks).
        self.ext_len: dict[int, int] = {}
        self.bad_list_reads: set[int] = set()
        self.lorder: dict[str, list[_Write]] = {}
        self.lwriter: dict[str, list[int]] = {}
        # list key -> writer node -> index of its first element: built on demand (only an
        # OTV search inside a cycle asks, and most histories have no cycle).
        self.lfirst: dict[str, dict[int, int]] = {}
        node_of = self.node_of
        stride = self.stride
        for k in self.list_keys:
            # By node, then position in it: one int key per append (positions < stride).
            apps = sorted(
                (w for w in self.list_appends.get(k, []) if node_of[w.tx] >= 0),
                key=lambda w: node_of[w.tx] * stride + w.pos,
            )
            reads = [rd for rd in self.list_reads.get(k, []) if self.is_node[rd[0]]]
            longest = self._fast_list(k, apps, reads)
            if longest >= 0:
                order, tail = apps, apps[longest:]
            else:
                order, tail = self._slow_list(k, apps, reads)
            self._check_other_reads(k, order)
            wr = [node_of[w.tx] for w in order]
            self.lorder[k] = order
            self.lwriter[k] = wr
            # Unread appends are placed by commit order, unknown for promoted transactions.
            tail_writers = {w.tx for w in tail}
            if len(tail_writers) > 1 and tail_writers & self.promoted:
                self.uncertain.add(k)
            if k in self.uncertain:
                continue
            for j in range(1, len(wr)):
                if wr[j - 1] != wr[j]:
                    self._edge(wr[j - 1], wr[j], _WW, k)

    def _fast_list(self, k: str, apps: list[_Write], reads: list[_ListRead]) -> int:
        """If every read of list ``k`` is a prefix of the commit-order list followed by the
        reader's own appends, record them and return the longest prefix length; else -1.

        This is the common case, checked with tuple comparisons instead of per-element lookups
        (list reads return whole lists, so their total size grows faster than the history).
        """
        ref = tuple(w.value for w in apps)
        first: dict[int, int] = {}
        for idx, w in enumerate(apps):
            first.setdefault(w.tx, idx)
        lengths: list[tuple[int, int]] = []
        longest = 0
        n_ref = len(ref)
        stride = self.stride
        # Reads between two appends see the same prefix: its copy is kept for the next one.
        prefix_len, prefix = n_ref, ref
        for i, pos, c, value in reads:
            if c == 0:
                # What _prefix_len does, for the common read holding no own appends.
                m = len(value)
                if m != prefix_len:
                    prefix_len, prefix = m, ref[:m]
                if first.get(i, m) < m or value != prefix:
                    return -1
            else:
                m = self._prefix_len(k, ref, first, i, pos, c, value)
                if m < 0:
                    return -1
            lengths.append((i * stride + pos, m))
            if m > longest:
                longest = m
        for op_id, m in lengths:
            self.ext_len[op_id] = 2 * m + 1
        return longest

    def _prefix_len(
        self,
        k: str,
        ref: tuple[Scalar | None, ...],
        first: Mapping[int, int],
        i: int,
        pos: int,
        c: int,
        value: tuple[Scalar, ...],
    ) -> int:
        """Length m if tx ``i``'s read at ``pos``, ``value``, is ``ref[:m]`` followed by its
        ``c`` own appends made before the read, in order, and holds none of its own later ones;
        else -1."""
        m = len(value) - c
        if m < 0 or first.get(i, m) < m:
            return -1
        # Compared whole where possible: slicing copies every element of a long list.
        if (value if c == 0 else value[:m]) != (ref if m == len(ref) else ref[:m]):
            return -1
        prev = -1
        for e in value[m:]:
            mine = self._lookup(k, e)
            if mine is None or mine.tx != i or not prev < mine.pos < pos:
                return -1
            prev = mine.pos
        return m

    def _check_other_reads(self, k: str, order: list[_Write]) -> None:
        """Verify list reads by transactions that are not nodes the same fast way, so the read
        pass can skip their per-element checks too."""
        others = [rd for rd in self.list_reads.get(k, []) if not self.is_node[rd[0]]]
        if not others:
            return
        ref = tuple(w.value for w in order)
        first: dict[int, int] = {}
        for i, pos, c, value in others:
            m = self._prefix_len(k, ref, first, i, pos, c, value)
            if m >= 0:
                self.ext_len[i * self.stride + pos] = 2 * m + 1

    def _slow_list(
        self, k: str, apps: list[_Write], reads: list[_ListRead]
    ) -> tuple[list[_Write], list[_Write]]:
        """List order of ``k`` from its longest read (Elle's rule); returns it and the unread
        tail. Reads that contradict it are reported as incompatible-order."""
        node_of = self.node_of
        longest: tuple[_Write, ...] = ()
        ext_reads: list[tuple[int, int, tuple[_Write, ...]]] = []
        for i, pos, _, value in reads:
            ext_l: list[_Write] = []
            for e in value:
                w = self._lookup(k, e)
                if w is not None and w.tx != i and node_of[w.tx] >= 0:
                    ext_l.append(w)
            ext = tuple(ext_l)
            ext_reads.append((i, pos, ext))
            if len(ext) > len(longest):
                longest = ext
        if len(set(longest)) != len(longest):
            dup = sorted({repr(w.value) for w in longest if longest.count(w) > 1})
            for i, pos, ext in ext_reads:
                if ext == longest:
                    self.bad_list_reads.add(i * self.stride + pos)
                    self._find(
                        INCOMPATIBLE,
                        [self.txs[i].id],
                        [k],
                        [],
                        f"{self._name(i)} read list {k} = {_fmt_list(ext)}, which holds "
                        f"{', '.join(dup)} more than once although every element was appended once",
                    )
                    break
            self.uncertain.add(k)
            longest = tuple(dict.fromkeys(longest))
        n_long = len(longest)
        for i, pos, ext in ext_reads:
            op_id = i * self.stride + pos
            if op_id in self.bad_list_reads:
                continue
            if len(ext) <= n_long and ext == longest[: len(ext)]:
                self.ext_len[op_id] = 2 * len(ext)
                continue
            self.bad_list_reads.add(op_id)
            self._find(
                INCOMPATIBLE,
                [self.txs[i].id],
                [k],
                [],
                f"{self._name(i)} read list {k} = {_fmt_list(ext)} (committed elements), which is "
                f"not a prefix of the order other reads show, {_fmt_list(longest)}: two reads "
                "disagree on the order of appends",
            )
        in_long = set(longest)
        tail = [w for w in apps if w not in in_long]
        return list(longest) + tail, tail

    # -- 6. predicate definitions over versions ----------------------------------------------

    def _predicate_matches(self) -> None:
        """Where predicate reads missed a matching version, as segments; the prw edges to
        versions committed before the reader, per read (``pr_back``).

        A read of predicate P that did not return item key k saw some version of k that does
        not match (or none): at the latest, the last non-matching version sent before the read
        completed (``_latest_sent_before``); its (shortcut) prw target is the first matching
        version after that one. The suffix minima of the non-matching versions' send times cut
        the completion times into segments, one per non-matching version that can be the
        latest seen (and one before them all), each with its target or none; a read without
        timing completed at +inf, so it gets the last segment. Per predicate, the segments with
        a target are kept sorted by target node (``pr_segs``).

        The edges that point back in commit order (target committed before the reader) are
        found here for every read: they decide where cycles can lie (see ``_cycles``). Those
        pointing forward are only wanted where they can lie on a cycle, and ``_cycles`` asks for
        them (``_later_predicate_edges``): a predicate read followed by many matching writes
        would otherwise get an edge to each of them, a graph quadratic in the history.
        """
        inf = float("inf")
        node_of = self.node_of
        stride = self.stride
        # Every installed version's value, per key, looked up once for all the predicates, and
        # the versions that hold a value (a delete matches nothing) flat, for the predicates to
        # be called on them in one pass each: (the key's entry, version index, key, value).
        values: list[tuple[str, list[int], list[int]]] = []
        at: list[int] = []
        idxs: list[int] = []
        keys: list[str] = []
        vals: list[Scalar] = []
        if any(name in self.predicates for name in self.pr_reads):
            finals, tx_of, txs = self.finals, self.tx_of, self.txs
            for k, vl in self.vers.items():
                if k in self.uncertain:
                    continue
                # When each version's write was sent (see _version_invoke), read here while
                # the write is at hand rather than looked up again per predicate.
                sent: list[int] = []
                for idx, n in enumerate(vl):
                    i = tx_of[n]
                    installed = finals[i][k]
                    spans = txs[i].op_spans
                    sent.append(spans[installed.pos][0] if spans else -1)
                    v = installed.value
                    if v is not None:
                        at.append(len(values))
                        idxs.append(idx)
                        keys.append(k)
                        vals.append(v)
                values.append((k, vl, sent))
        matched = self._matching(keys, vals)
        for name, reads in self.pr_reads.items():
            if name not in matched:
                continue
            # (latest event at which a read could still miss a matching version of the key,
            # key, its version list, indices of its matching and of its other versions, the
            # suffix minima of the latter's send times). A read that completed after that event
            # saw a non-matching version installed after every matching one: no prw edge.
            per_key: list[tuple[float, str, list[int], list[int], list[int], list[int]]] = []
            # The matching versions, a key at a time (they are in key order).
            for entry, hits in groupby(matched[name], at.__getitem__):
                yes = list(map(idxs.__getitem__, hits))
                k, vl, sent = values[entry]
                if len(yes) == len(vl):  # every version matches (one, often)
                    per_key.append((inf, k, vl, yes, [], []))
                    continue
                matching = set(yes)
                no = [idx for idx in range(len(vl)) if idx not in matching]
                mins = [sent[idx] for idx in no]
                for j in range(len(mins) - 2, -1, -1):
                    if mins[j + 1] < mins[j]:
                        mins[j] = mins[j + 1]
                after = bisect_right(no, yes[-1])
                per_key.append((mins[after] if after < len(no) else inf, k, vl, yes, no, mins))
            # A read's edges are made in the order of this ranking, latest such event first
            # (stable: keys in version-order order), as they always were.
            per_key.sort(key=itemgetter(0), reverse=True)  # reversed, and still stable
            segs: list[_Segment] = []
            for rank, (_, k, vl, yes, no, mins) in enumerate(per_key):
                lo = -inf
                for j in range(-1, len(no)):
                    y = bisect_right(yes, no[j] if j >= 0 else -1)
                    if y == len(yes):
                        break  # no matching version after this one, nor after later ones
                    if j >= 0:
                        lo = mins[j]
                    hi = mins[j + 1] if j + 1 < len(no) else inf
                    if lo < hi:
                        target = vl[yes[y]]
                        first = 1 if j < 0 else 0
                        segs.append((target, lo, hi, (rank, k, target, first)))
            if not segs:
                continue
            segs.sort(key=itemgetter(0))
            self.pr_segs[name] = ([seg[0] for seg in segs], segs)
            queries: list[tuple[int, float, int]] = []
            for i, pos in reads:
                node = node_of[i]
                if node < 0:
                    continue
                spans = self.txs[i].op_spans
                done = spans[pos][1] if spans else None
                self.pr_queries.append((node, name, i, pos, done))
                queries.append((node, inf if done is None else done, i * stride + pos))
            queries.sort()
            self.pr_back.update(_stab(segs, queries))
        self.pr_queries.sort(key=itemgetter(0))

    def _matching(self, keys: list[str], vals: list[Scalar]) -> dict[str, list[int]]:
        """Per predicate read, the positions of (``keys[j]``, ``vals[j]``) that it matches.

        Every predicate is asked about every version. The versions are taken a block at a
        time, every predicate in turn on each block: a predicate looks its version up in data
        of its own (the footprint's matches, keyed by version), and the block's entries are
        still in the CPU's caches when the next predicate asks about them. One predicate at a
        time over the whole history fetched every entry from memory once per predicate: on a
        history of 100,000 transactions, twice as long per call as on one of 10,000."""
        fns = {name: self.predicates[name] for name in self.pr_reads if name in self.predicates}
        matched: dict[str, list[int]] = {name: [] for name in fns}
        for lo in range(0, len(keys), _PREDICATE_BLOCK):
            ks, vs = keys[lo : lo + _PREDICATE_BLOCK], vals[lo : lo + _PREDICATE_BLOCK]
            block = range(lo, lo + len(ks))
            for name, fn in fns.items():
                matched[name].extend(compress(block, map(fn, ks, vs)))
        return matched

    # -- 7. reads: wr / rw / prw edges, G1a, G1b, garbage, internal, PMP ---------------------

    def _reads(self) -> None:
        # (key, version index) -> nodes that read that version and later wrote the key
        self.p4: dict[tuple[str, int], list[int]] = {}
        list_keys = self.list_keys
        by_value = self.by_value
        node_of = self.node_of
        finals = self.finals
        vers = self.vers
        uncertain = self.uncertain
        e_src, e_dst, e_kind, e_key = self.e_src, self.e_dst, self.e_kind, self.e_key
        # Values reused under other keys make the by-value lookup ambiguous: no fast path then.
        fast = not self.by_key_value
        ext_len, stride = self.ext_len, self.stride
        lwriter, lorder = self.lwriter, self.lorder
        for i, t in enumerate(self.txs):
            node = node_of[i]
            mine = finals[i]
            own: dict[str, Scalar | None] = {}
            own_app: dict[str, list[Scalar]] = {}
            seen_item: dict[str, Scalar | None] = {}
            prev_pr: dict[str, frozenset[tuple[str, Scalar]]] = {}
            p4_keys: set[str] = set()
            for pos, op in enumerate(t.ops):
                kind = op.kind
                k = op.key
                v = op.value
                if kind == "r":
                    if k in list_keys:
                        # Fast path: a read the list pass verified, by a committed transaction.
                        info = ext_len.get(i * stride + pos, 0)
                        if info & 1 and node >= 0 and k not in uncertain:
                            m = info >> 1
                            order_w = lwriter[k]
                            if m == 0 or lorder[k][m - 1].final:
                                if m:
                                    e_src.append(order_w[m - 1])
                                    e_dst.append(node)
                                    e_kind.append(_WR)
                                    e_key.append(k)
                                if m < len(order_w) and order_w[m] != node:
                                    e_src.append(node)
                                    e_dst.append(order_w[m])
                                    e_kind.append(_RW)
                                    e_key.append(k)
                                continue
                        self._list_read(i, node, pos, k, v, own_app)
                        continue
                    assert not isinstance(v, tuple | frozenset)
                    if k in own:
                        self._item_read(i, node, pos, k, v, own, p4_keys)
                        continue
                    seen_item[k] = v
                    # Fast path, the common case: a committed transaction reads the installed
                    # version of another committed transaction (what _item_read does, inlined).
                    if fast and node >= 0 and v is not None and k not in uncertain:
                        w = by_value.get(v)
                        if w is not None and w.key == k and w.final and w.tx != i:
                            wnode = node_of[w.tx]
                            if wnode >= 0 and not w.indet:
                                e_src.append(wnode)
                                e_dst.append(node)
                                e_kind.append(_WR)
                                e_key.append(k)
                                p = w.vidx
                                vl = vers[k]
                                if p + 1 < len(vl) and vl[p + 1] != node:
                                    e_src.append(node)
                                    e_dst.append(vl[p + 1])
                                    e_kind.append(_RW)
                                    e_key.append(k)
                                if k in mine and k not in p4_keys:
                                    p4_keys.add(k)
                                    self.p4.setdefault((k, p), []).append(node)
                                continue
                    self._item_read(i, node, pos, k, v, own, p4_keys)
                elif kind == "w" or kind == "ins":
                    assert isinstance(v, int | str)
                    own[k] = v
                elif kind == "del":
                    own[k] = None
                elif kind == "append":
                    assert isinstance(v, int | str)
                    own_app.setdefault(k, []).append(v)
                else:  # predicate read
                    assert isinstance(v, frozenset)
                    for rk, rv in v:
                        if rk not in list_keys:
                            self._item_read(i, node, pos, rk, rv, own, p4_keys)
                    if node >= 0:
                        self._predicate_read(i, node, pos, k, v, own, seen_item, prev_pr)
                    prev_pr[k] = v

    def _item_read(
        self,
        i: int,
        node: int,
        pos: int,
        k: str,
        v: Scalar | None,
        own: Mapping[str, Scalar | None],
        p4_keys: set[str],
    ) -> None:
        if k in own:
            if own[k] != v:
                self._find(
                    INTERNAL,
                    [self.txs[i].id],
                    [k],
                    [],
                    f"{self._name(i)} wrote {k} = {_fmt(own[k])} and then read {k} = {_fmt(v)}: "
                    "a transaction must see its own writes",
                )
            return
        if v is None:
            if node < 0 or k in self.uncertain:
                return
            upper = self._absent_upper(k, i, pos)
            if upper is None:
                self._dirty_absent(i, pos, k)
                return
            p, ambiguous = upper
            vl = self.vers.get(k)
            if vl is not None and p + 1 < len(vl) and vl[p + 1] != node:
                self._edge(node, vl[p + 1], _RW, k)
            if not ambiguous and k in self.finals[i] and k not in p4_keys:
                p4_keys.add(k)
                self.p4.setdefault((k, -1), []).append(node)
            return
        w: _Write | None = self.by_value.get(v)
        if w is None or w.key != k:
            w = self.by_key_value.get((k, v)) if self.by_key_value else None
        if w is None or w.tx == i:
            if w is None:
                what = "a value no transaction wrote: the database returned data that was never "
                what += "written, or the tester recorded the wrong value"
                anomaly = GARBAGE
            else:
                what = "before writing it itself"
                anomaly = INTERNAL
            self._find(
                anomaly, [self.txs[i].id], [k], [], f"{self._name(i)} read {k} = {_fmt(v)}, {what}"
            )
            return
        if node < 0:
            return
        wtx = w.tx
        wnode = self.node_of[wtx]
        if wnode < 0:
            self._find(
                G1A,
                [self.txs[wtx].id, self.txs[i].id],
                [k],
                [(self.txs[wtx].id, self.txs[i].id, "wr", k)],
                f"{self._name(i)} committed after reading {k} = {_fmt(v)}, written by "
                f"{self._name(wtx)}, which did not commit ({self.txs[wtx].status}): "
                "an aborted read",
            )
            return
        self.e_src.append(wnode)
        self.e_dst.append(node)
        self.e_kind.append(_WR)
        self.e_key.append(k)
        if w.indet:
            return
        if not w.final:
            later = self.finals[wtx].get(k)
            self._find(
                G1B,
                [self.txs[wtx].id, self.txs[i].id],
                [k],
                [(self.txs[wtx].id, self.txs[i].id, "wr", k)],
                f"{self._name(i)} read {k} = {_fmt(v)}, written by {self._name(wtx)}, which later "
                f"overwrote {k} with {_fmt(later.value if later else None)} in the same "
                f"transaction: {self._name(i)} saw an intermediate state",
            )
        if k in self.uncertain:
            return
        installed = self.finals[wtx].get(k)
        if installed is None:
            return
        p = installed.vidx
        vl = self.vers[k]
        if p + 1 < len(vl) and vl[p + 1] != node:
            self.e_src.append(node)
            self.e_dst.append(vl[p + 1])
            self.e_kind.append(_RW)
            self.e_key.append(k)
        if k in self.finals[i] and k not in p4_keys:
            p4_keys.add(k)
            self.p4.setdefault((k, p), []).append(node)

    def _list_read(
        self,
        i: int,
        node: int,
        pos: int,
        k: str,
        v: OpValue,
        own_app: Mapping[str, list[Scalar]],
    ) -> None:
        op_id = i * self.stride + pos
        info = self.ext_len.get(op_id, 0)
        if not info & 1:
            self._list_read_elements(i, node, k, v, own_app)
        if node < 0 or op_id in self.bad_list_reads or k in self.uncertain:
            return
        m = info >> 1
        order_w = self.lwriter[k]
        if m:
            last = self.lorder[k][m - 1]
            wnode = order_w[m - 1]
            self._edge(wnode, node, _WR, k)
            if not last.final:
                self._find(
                    G1B,
                    [self.txs[last.tx].id, self.txs[i].id],
                    [k],
                    [(self.txs[last.tx].id, self.txs[i].id, "wr", k)],
                    f"{self._name(i)} read list {k} = {_fmt_list(self.lorder[k][:m])}, ending "
                    f"with {last.value!r} appended by {self._name(last.tx)}, which appended to "
                    f"{k} again later: {self._name(i)} saw an intermediate state",
                )
            # A read ending inside its writer's appends saw that writer's version (G1b above);
            # the next version is the next writer's.
            while m < len(order_w) and order_w[m] == wnode:
                m += 1
        if m < len(order_w) and order_w[m] != node:
            self._edge(node, order_w[m], _RW, k)

    def _list_read_elements(
        self,
        i: int,
        node: int,
        k: str,
        v: OpValue,
        own_app: Mapping[str, list[Scalar]],
    ) -> None:
        """Per-element checks of a list read: garbage, aborted and own elements."""
        if v is None:
            v = ()
        if not isinstance(v, tuple):
            raise ValueError(
                f"T{self.txs[i].id} read list key {k} as {v!r}: list keys are read whole, as a "
                "tuple of their elements"
            )
        mine: list[Scalar] = []
        for e in v:
            w = self._lookup(k, e)
            if w is None:
                self._find(
                    GARBAGE,
                    [self.txs[i].id],
                    [k],
                    [],
                    f"{self._name(i)} read list {k} = {_fmt(v)}, whose element {e!r} no "
                    "transaction appended: the database or the tester is broken",
                )
                continue
            wtx = w.tx
            if wtx == i:
                mine.append(e)
            elif node >= 0 and self.node_of[wtx] < 0:
                self._find(
                    G1A,
                    [self.txs[wtx].id, self.txs[i].id],
                    [k],
                    [(self.txs[wtx].id, self.txs[i].id, "wr", k)],
                    f"{self._name(i)} committed after reading list {k} = {_fmt(v)}, whose element "
                    f"{e!r} was appended by {self._name(wtx)}, which did not commit "
                    f"({self.txs[wtx].status}): an aborted read",
                )
        expected = own_app.get(k, [])
        if mine != expected:
            self._find(
                INTERNAL,
                [self.txs[i].id],
                [k],
                [],
                f"{self._name(i)} appended {_fmt(tuple(expected))} to {k} but then read "
                f"{k} = {_fmt(v)}: a transaction must see exactly its own appends",
            )

    def _predicate_read(
        self,
        i: int,
        node: int,
        pos: int,
        name: str,
        rows: frozenset[tuple[str, Scalar]],
        own: Mapping[str, Scalar | None],
        seen_item: Mapping[str, Scalar | None],
        prev_pr: Mapping[str, frozenset[tuple[str, Scalar]]],
    ) -> None:
        t = self.txs[i]
        ext = {rk: rv for rk, rv in rows if rk not in own}
        # PMP (a): the same predicate evaluated twice gave different rows.
        prev = prev_pr.get(name)
        if prev is not None:
            before = {rk: rv for rk, rv in prev if rk not in own}
            if before != ext:
                changed = sorted(set(before.items()) ^ set(ext.items()), key=repr)
                keys = sorted({rk for rk, _ in changed})
                writers = sorted(
                    {self.txs[w].id for rk, rv in changed if (w := self._changer(rk, rv, ext)) >= 0}
                    - {t.id}
                )
                self._find(
                    PMP,
                    [t.id, *writers],
                    keys,
                    [],
                    f"T{t.id} evaluated predicate {name} twice and got different rows: "
                    f"{_fmt_rows(before)} then {_fmt_rows(ext)}"
                    + (
                        f" (changed by {', '.join(f'T{x}' for x in writers)}, committed in between)"
                        if writers
                        else ""
                    ),
                )
        fn = self.predicates.get(name)
        for rk, rv in ext.items():
            # PMP (c): a returned row disagrees with an earlier item read of the same key.
            if rk in seen_item and seen_item[rk] != rv:
                self._find(
                    PMP,
                    [t.id],
                    [rk],
                    [],
                    f"T{t.id} read {rk} = {_fmt(seen_item[rk])}, then its predicate read {name} "
                    f"returned {rk} = {_fmt(rv)}",
                )
        if fn is not None:
            # PMP (b): a row an earlier item read saw, and that matches, is missing.
            for sk, sv in seen_item.items():
                if sv is None or sk in own or sk in ext:
                    continue
                if fn(sk, sv):
                    self._find(
                        PMP,
                        [t.id],
                        [sk],
                        [],
                        f"T{t.id} read {sk} = {_fmt(sv)}, which matches predicate {name}, then "
                        f"its predicate read {name} did not return {sk}",
                    )
            self._predicate_edges(i, node, pos, name, ext, own)

    def _predicate_edges(
        self,
        i: int,
        node: int,
        pos: int,
        name: str,
        ext: Mapping[str, Scalar],
        own: Mapping[str, Scalar | None],
    ) -> None:
        """The prw edges of one predicate read to versions committed before its transaction;
        those to versions committed after it are made in ``_later_predicate_edges``, which
        places them, by this read's ``pr_slot`` and the keys' ranks, where they would have
        stood among these."""
        op_id = i * self.stride + pos
        slot = self.pr_slot[op_id] = len(self.e_src)
        found = self.pr_back.get(op_id)
        if not found:
            return
        spans = self.txs[i].op_spans
        done = spans[pos][1] if spans else None
        fn = self.predicates[name]
        found.sort()
        for rank, k, target, first in found:
            if k in ext or k in own or self._missed_shadow(k, done, fn):
                continue
            if first and self._missed_dirty(k, i, done, fn):
                continue
            self.pr_key[len(self.e_src)] = (slot, op_id, rank)
            self._edge(node, target, _PRW, k)

    def _missed_shadow(self, k: str, done: int | None, fn: Predicate) -> bool:
        """Whether a predicate read that completed at ``done`` and did not return ``k`` may
        have seen a non-matching shadow version of it (then it makes no claim about ``k``)."""
        return self._shadowed(k, done, lambda v: v is None or not fn(k, v))

    def _changer(self, k: str, v: Scalar, now: Mapping[str, Scalar]) -> int:
        """The tx that made a predicate's rows differ at row ``k`` = ``v`` (one of the two
        results, ``now`` the later one), or -1: the writer of a row the later result returned;
        for a row it no longer returned, whoever installed the next version of ``k``."""
        if now.get(k) == v:
            return self._writer(k, v)
        if k in now:
            return -1  # the old value of a row whose new value names its writer
        old = self._lookup(k, v)
        if old is None or old.vidx < 0 or k in self.uncertain:
            return -1
        vl = self.vers[k]
        return self.tx_of[vl[old.vidx + 1]] if old.vidx + 1 < len(vl) else -1

    def _missed_dirty(self, k: str, i: int, done: int | None, fn: Predicate) -> bool:
        """Whether tx ``i``'s predicate read that completed at ``done`` and did not return
        ``k`` may have seen a non-matching uncommitted version of it (see ``_dirty``)."""
        return self._dirty(k, i, done, lambda v: not fn(k, v)) is not None

    def _later_predicate_edges(
        self, regions: Sequence[tuple[int, int]], inside: Sequence[int]
    ) -> list[int]:
        """The prw edges from predicate reads to versions committed after the reader that can
        lie on a cycle, given the regions of nodes where cycles can lie and the ids of the
        edges inside them (see ``_cycles``); the ids of the edges made.

        Such an edge outside every region lies on no cycle. Inside a region, it lies on one
        only if its ends share a strongly connected component, and they do in a graph with
        more edges than the real one: the edges inside the regions, plus from each reader to
        every later version in its region that matches its predicate. That graph stays linear
        in size: per region and predicate, a chain of stand-in nodes over the targets, in
        commit order, each leading to its target and to the next; a reader leads to the first
        after it. Only readers and targets that share a component of it get their edges, found
        as in ``_predicate_matches``. Cycles are all the graph is used for, so leaving the
        others out changes no finding; in a mostly serial history they are nearly all of them,
        even when one long transaction makes the whole history one region.
        """
        queries = self.pr_queries
        if not queries:
            return []
        q_nodes = [q[0] for q in queries]
        local: dict[int, int] = {}
        adj: list[list[int]] = []

        def at(x: int) -> int:
            """The local id of node ``x`` in the wider graph."""
            j = local.get(x)
            if j is None:
                j = local[x] = len(adj)
                adj.append([])
            return j

        jobs: list[tuple[str, list[tuple[int, str, int, int, int | None]], int, int]] = []
        for lo, hi in regions:
            # Readers up to hi - 1 (a target lies after its reader, in the region).
            a, b = bisect_left(q_nodes, lo), bisect_left(q_nodes, hi)
            by_name: dict[str, list[tuple[int, str, int, int, int | None]]] = {}
            for q in queries[a:b]:
                by_name.setdefault(q[1], []).append(q)
            for name, reads in by_name.items():
                ts = self.pr_segs[name][0]
                s0, s1 = bisect_right(ts, reads[0][0]), bisect_right(ts, hi)
                if s0 == s1:
                    continue
                jobs.append((name, reads, s0, s1))
                ends = sorted(set(ts[s0:s1]))
                chain = len(adj)
                adj.extend([[chain + j + 1] for j in range(len(ends) - 1)])
                adj.append([])
                for j, t in enumerate(ends):
                    adj[chain + j].append(at(t))
                for node, *_ in reads:
                    j = bisect_right(ends, node)
                    if j < len(ends):
                        adj[at(node)].append(chain + j)
        if not jobs:
            return []
        e_src, e_dst = self.e_src, self.e_dst
        for e in inside:
            adj[at(e_src[e])].append(at(e_dst[e]))
        comp = _tarjan(adj)
        sizes = Counter(comp)
        made: list[int] = []
        stride = self.stride
        inf = float("inf")
        for name, reads, s0, s1 in jobs:
            segs = self.pr_segs[name][1]
            by_comp: dict[int, list[_Segment]] = {}
            for seg in segs[s0:s1]:
                c = comp[local[seg[0]]]
                if sizes[c] > 1:
                    by_comp.setdefault(c, []).append(seg)
            asks: dict[int, list[tuple[int, float, int]]] = {}
            for node, _, i, pos, done in reads:
                lid = local.get(node)  # none: no target after it
                c = -1 if lid is None else comp[lid]
                if c in by_comp:
                    asks.setdefault(c, []).append(
                        (-node, inf if done is None else done, i * stride + pos)
                    )
            fn = self.predicates[name]
            for c, mine in asks.items():
                # A target is open to the readers before it: later targets first, later
                # readers first (the keys negated, as _stab takes them in ascending order).
                later = [(-t, lo_d, hi_d, item) for t, lo_d, hi_d, item in by_comp[c]]
                later.reverse()
                mine.sort()
                for op_id, targets in _stab(later, mine).items():
                    i, pos = divmod(op_id, stride)
                    node = self.node_of[i]
                    ops = self.txs[i].ops
                    spans = self.txs[i].op_spans
                    done = spans[pos][1] if spans else None
                    rows = ops[pos].value
                    assert isinstance(rows, frozenset)
                    returned = {rk for rk, _ in rows}
                    own = {op.key for op in ops[:pos] if op.kind in ("w", "ins", "del")}
                    slot = self.pr_slot[op_id]
                    for rank, k, target, first in targets:
                        if k in returned or k in own or self._missed_shadow(k, done, fn):
                            continue
                        if first and self._missed_dirty(k, i, done, fn):
                            continue
                        self.pr_key[len(self.e_src)] = (slot, op_id, rank)
                        made.append(len(self.e_src))
                        self._edge(node, target, _PRW, k)
        return made

    # -- 8. lost updates ---------------------------------------------------------------------

    def _lost_updates(self) -> None:
        for (k, p), readers in self.p4.items():
            if len(readers) < 2:
                continue
            vl = self.vers[k]
            ordered = sorted(readers, key=lambda n: self.finals[self.tx_of[n]][k].vidx)
            ids = [self.txs[self.tx_of[n]].id for n in ordered]
            if p < 0:
                source = "absent"
            else:
                src = self.tx_of[vl[p]]
                source = f"{_fmt(self.finals[src][k].value)} (written by {self._name(src)})"
            wrote = ", ".join(
                f"T{ids[j]} wrote {_fmt(self.finals[self.tx_of[n]][k].value)}"
                for j, n in enumerate(ordered)
            )
            lost = _join(ids[:-1])
            self._find(
                P4,
                ids,
                [k],
                [],
                f"{_join(ids)} {'both' if len(ids) == 2 else 'all'} read {k} = {source} and then "
                f"wrote {k} "
                f"({wrote}, in commit order) without seeing each other's write: the update of "
                f"{lost} was lost",
            )

    # -- 9. cycles and OTV -------------------------------------------------------------------

    def _cycles(self) -> None:
        e_src, e_dst = self.e_src, self.e_dst
        # Nodes are numbered in commit order, so every cycle has a backward edge, and walking
        # a cycle down from its highest node to its lowest crosses every node in between on a
        # backward edge s -> d (d < x <= s). A cycle therefore lies inside one maximal run of
        # overlapping backward-edge spans; Tarjan only needs the edges inside such runs, which
        # in a mostly serializable history is a small part of the graph.
        spans = sorted((d, s) for s, d in zip(e_src, e_dst, strict=True) if d < s)
        region = [-1] * len(self.tx_of)
        bounds = self.regions
        j = 0
        while j < len(spans):
            lo, hi = spans[j]
            j += 1
            while j < len(spans) and spans[j][0] <= hi:
                hi = max(hi, spans[j][1])
                j += 1
            for x in range(lo, hi + 1):
                region[x] = len(bounds)
            bounds.append((lo, hi))
        if not bounds:
            return
        # Edges leaving a region, found by a scan that runs in C (map, compress): the graph has
        # several edges per transaction, and the regions hold few of them.
        from_region = compress(count(), map((-1).__lt__, map(region.__getitem__, e_src)))
        inside = [e for e in from_region if region[e_src[e]] == region[e_dst[e]]]
        # Forward edges change no region: the prw edges that point forward are made now, only
        # those that can lie on a cycle (see _later_predicate_edges).
        late = self._later_predicate_edges(bounds, inside)
        if late:
            # Each late edge back in its read's place (pr_key); every other edge stays where
            # it was made, after the prw edges of the reads made before it.
            inside += late
            keys = self.pr_key
            inf = float("inf")
            inside.sort(key=lambda e: keys.get(e) or (e, inf, 0))
        nodes = sorted({e_src[e] for e in inside})
        local = {x: j for j, x in enumerate(nodes)}
        adj: list[list[int]] = [[] for _ in nodes]
        for e in inside:
            d = local.get(e_dst[e])
            if d is not None:
                adj[local[e_src[e]]].append(d)
        comp = _tarjan(adj)
        sizes = Counter(comp)
        buckets: dict[int, list[int]] = {}
        for e in inside:
            d = local.get(e_dst[e])
            if d is None:
                continue
            c = comp[local[e_src[e]]]
            if c == comp[d] and sizes[c] > 1:
                buckets.setdefault(c, []).append(e)
        for c in sorted(buckets):
            self._component(buckets[c])

    def _component(self, edge_ids: list[int]) -> None:
        members = sorted({self.e_src[e] for e in edge_ids} | {self.e_dst[e] for e in edge_ids})
        local = {m: j for j, m in enumerate(members)}
        ladj: _LocalAdj = [[] for _ in members]
        seen: set[tuple[int, int, int]] = set()
        for e in edge_ids:
            s = local[self.e_src[e]]
            d = local[self.e_dst[e]]
            kind = self.e_kind[e]
            if (s, d, kind) in seen:
                continue
            seen.add((s, d, kind))
            ladj[s].append((d, kind, self.e_key[e]))
        n_edges = len(seen)
        present = 0
        for _, kind, _ in seen:
            present |= 1 << kind
        memo: dict[int, list[int]] = {}

        def components(mask: int) -> list[int]:
            """SCC ids of the subgraph of ``mask`` kinds (shared between classes)."""
            mask &= present
            if mask == present:
                return [0] * len(ladj)  # the whole component
            if mask not in memo:
                memo[mask] = _tarjan([[d for d, k, _ in out if (mask >> k) & 1] for out in ladj])
            return memo[mask]

        for name, cand_mask, allowed, need, apart in _CLASSES:
            # A cycle of the class lies inside one SCC of (candidate | allowed) edges. Candidates
            # whose ends share an SCC of the allowed edges alone close a cycle for sure when the
            # class needs nothing more (G0, G1c, G-single), so they go first: those classes are
            # always found, and the budget only limits the search for a shorter example.
            within = components(allowed)
            wider = components(allowed | cand_mask)
            sure: list[tuple[int, int, int, str]] = []
            maybe: list[tuple[int, int, int, str]] = []
            for u, out in enumerate(ladj):
                for v, kind, key in out:
                    if (cand_mask >> kind) & 1 and wider[u] == wider[v]:
                        (sure if within[u] == within[v] else maybe).append((u, v, kind, key))
            budget = [max(_MIN_BUDGET, 4 * n_edges)]
            best: list[tuple[int, int, int, str]] | None = None
            for u, v, kind, key in sure + maybe:
                # No cycle is shorter than two edges, four when anti-dependencies stand apart.
                if budget[0] <= 0 or (best is not None and len(best) == (4 if apart else 2)):
                    break
                path = _bfs_back(ladj, v, u, allowed, need, budget, apart, kind)
                if path is not None and (best is None or len(path) + 1 < len(best)):
                    best = [(u, v, kind, key), *path]
            if best is not None:
                cycle = [(members[a], members[b], k, key) for a, b, k, key in best]
                self._cycle_finding(name, cycle)
        self._otv(set(members))

    def _cycle_finding(self, name: str, cycle: list[tuple[int, int, int, str]]) -> None:
        tx_of = self.tx_of
        ids = [self.txs[tx_of[a]].id for a, _, _, _ in cycle]
        edges = [
            (self.txs[tx_of[a]].id, self.txs[tx_of[b]].id, _KIND[kind], key)
            for a, b, kind, key in cycle
        ]
        words = "; ".join(self._describe(a, b, kind, key) for a, b, kind, key in cycle)
        chain = f"T{ids[0]}" + "".join(f" -{kd}({key})-> T{b}" for _, b, kd, key in edges)
        keys = list(dict.fromkeys(key for _, _, _, key in cycle))
        self._find(
            name,
            ids,
            keys,
            edges,
            f"{words}. Together they form the cycle {chain}, with {_CLASS_SUMMARY[name]}",
        )

    def _final_value(self, n: int, k: str) -> Scalar | None:
        return self.finals[self.tx_of[n]][k].value

    def _describe(self, a: int, b: int, kind: int, key: str) -> str:
        """One edge in plain words."""
        ta, tb = self.tx_of[a], self.tx_of[b]
        na, nb = self._name(ta), self._name(tb)
        is_list = key in self.list_keys
        if kind == _WW:
            if is_list:
                return f"{nb} appended to {key} after {na} did"
            return (
                f"{na} wrote {key} = {_fmt(self._final_value(a, key))} and {nb} overwrote it with "
                f"{_fmt(self._final_value(b, key))}"
            )
        if kind == _WR:
            if is_list:
                return f"{nb} read list {key} including {na}'s appends"
            got = self._read_values(tb, key, lambda v: self._writer(key, v) == ta)
            return f"{nb} read {na}'s write of {_fmt(got)} to {key}"
        if kind == _RW:
            if is_list:
                return f"{na} read list {key} without {nb}'s appends, which come next"
            got = self._read_values(ta, key, lambda v: True)
            return (
                f"{na} read {key} = {_fmt(got)} and {nb} installed the next version, "
                f"{key} = {_fmt(self._final_value(b, key))}"
            )
        preds = [op.key for op in self.txs[ta].ops if op.kind == "pr"]
        return (
            f"{na}'s predicate read {' / '.join(dict.fromkeys(preds))} did not see {nb}'s write "
            f"{key} = {_fmt(self._final_value(b, key))}, which matches it"
        )

    def _read_values(self, i: int, key: str, pick: Callable[[Scalar], bool]) -> Scalar | None:
        """The first value tx ``i`` read from item ``key`` that satisfies ``pick``."""
        for op in self.txs[i].ops:
            if op.kind == "r" and op.key == key and not isinstance(op.value, tuple | frozenset):
                if op.value is None or pick(op.value):
                    return op.value
            elif op.kind == "pr":
                assert isinstance(op.value, frozenset)
                for rk, rv in op.value:
                    if rk == key and pick(rv):
                        return rv
        return None

    def _otv(self, members: set[int]) -> None:
        """OTV inside one strongly connected component (every OTV lies on a cycle)."""
        for node in sorted(members):
            i = self.tx_of[node]
            t = self.txs[i]
            own: set[str] = set()
            # writer node -> (key, value) through which this transaction saw it first
            observed: dict[int, tuple[str, OpValue]] = {}
            reported: set[int] = set()
            for pos, op in enumerate(t.ops):
                kind = op.kind
                if kind in ("w", "ins", "del", "append"):
                    own.add(op.key)
                    continue
                reads: list[tuple[str, Scalar | None]]
                if kind == "pr":
                    assert isinstance(op.value, frozenset)
                    reads = [(rk, rv) for rk, rv in sorted(op.value, key=repr)]
                elif op.key in self.list_keys:
                    if op.key in own or i * self.stride + pos in self.bad_list_reads:
                        continue
                    self._otv_list(i, node, pos, op.key, members, observed, reported)
                    continue
                else:
                    assert not isinstance(op.value, tuple | frozenset)
                    reads = [(op.key, op.value)]
                for k, v in reads:
                    if k in own or k in self.list_keys or k in self.uncertain:
                        continue
                    wnode = -1
                    if v is None:
                        upper = self._absent_upper(k, i, pos)
                        if upper is None:
                            continue
                        p = upper[0]
                    else:
                        w = self._lookup(k, v)
                        if w is None or w.indet or self.node_of[w.tx] < 0 or w.tx == i:
                            continue
                        wnode = self.node_of[w.tx]
                        installed = self.finals[w.tx].get(k)
                        if installed is None:
                            continue
                        p = installed.vidx
                    for w_node, (k0, v0) in observed.items():
                        if w_node == wnode or w_node in reported:
                            continue
                        theirs = self._installed(k, w_node)
                        idx = None if theirs is None else theirs.vidx
                        if idx is not None and p < idx:
                            reported.add(w_node)
                            self._otv_finding(i, w_node, k0, v0, k, v, idx)
                    if wnode in members and wnode != node:
                        observed.setdefault(wnode, (k, v))

    def _otv_list(
        self,
        i: int,
        node: int,
        pos: int,
        k: str,
        members: set[int],
        observed: dict[int, tuple[str, OpValue]],
        reported: set[int],
    ) -> None:
        if k in self.uncertain:
            return
        m = self.ext_len.get(i * self.stride + pos, 0) >> 1
        ext = tuple(w.value for w in self.lorder[k][:m] if w.value is not None)
        p = m - 1
        for w_node, (k0, v0) in observed.items():
            if w_node in reported:
                continue
            first = self._list_first(k, w_node)
            if first is not None and p < first:
                reported.add(w_node)
                self._otv_finding(i, w_node, k0, v0, k, ext, first)
        for wn in self.lwriter[k][:m]:
            if wn in members and wn != node:
                observed.setdefault(wn, (k, ext))

    def _list_first(self, k: str, node: int) -> int | None:
        """Index of ``node``'s first element in list ``k``'s order (None: it appended none)."""
        firsts = self.lfirst.get(k)
        if firsts is None:
            firsts = self.lfirst[k] = {}
            for idx, n in enumerate(self.lwriter[k]):
                firsts.setdefault(n, idx)
        return firsts.get(node)

    def _otv_finding(
        self, i: int, w_node: int, k0: str, v0: OpValue, k: str, v: OpValue, idx: int
    ) -> None:
        wtx = self.tx_of[w_node]
        t, wt = self.txs[i], self.txs[wtx]
        if k in self.list_keys:
            theirs = f"appended {self.lorder[k][idx].value!r} to {k}"
        else:
            theirs = f"wrote {k} = {_fmt(self._final_value(w_node, k))}"
        self._find(
            OTV,
            [t.id, wt.id],
            list(dict.fromkeys([k0, k])),
            [],
            f"T{t.id} read {k0} = {_fmt(v0)}, so it saw T{wt.id}'s writes; later it read "
            f"{k} = {_fmt(v)}, older than T{wt.id}'s version (T{wt.id} {theirs}): "
            f"T{wt.id} vanished from T{t.id}'s view",
        )


def _bad_value(txn_id: int, op: Op) -> ValueError:
    return ValueError(
        f"T{txn_id} has {op!r}: written values and appended elements must be ints or strings"
    )


def _fmt_rows(rows: Mapping[str, Scalar]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in sorted(rows.items())) + "}"


def _fmt_list(ws: Sequence[_Write]) -> str:
    return _fmt(tuple(w.value for w in ws if w.value is not None))


def _join(ids: Sequence[int]) -> str:
    names = [f"T{x}" for x in ids]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

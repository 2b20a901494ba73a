"""Routes for interest routing (docs/interest.md): over the mesh's links, the tree that
carries a batch from its origin to the nodes interested in its topic.

``Routes`` holds the graph: every node's link list (from ``$mesh``, the mesh view) and
this node's own live links, which replace its own list at once. An edge counts only if
both ends list each other, so a node cannot draw traffic through links it does not
have. On that graph, ``next_hops`` gives this node's children in the
Takahashi-Matsuyama Steiner tree rooted at the origin that spans the interested nodes:
start with the origin alone; repeatedly attach the interested node nearest to the tree
by a shortest path to it. Ties are broken by node id (neighbours in id order, the
nearest node with the lowest id first), so every node with the same view computes the
same tree. ``toward`` gives the next hop on a shortest path to one node (the fallback,
and hop-by-hop repair).

Pure (no I/O, no trio). Node ids are numbered (in id order) when the graph is built, so
the searches run over lists of ints; a list that changes between nodes already numbered
is taken into the built graph in place; one tree costs a breadth-first search from the
origin and, per interested node attached, a search limited to the nodes the new
branch brings closer (a few ms for 1,000 nodes, docs/interest.md). Trees are cached
per (origin, topic) until the graph, or the members interested in the topic, change;
at most ``max_cache``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping

Hops = tuple[bytes, ...]
#: Per child of this node on a tree, the interested members below it.
Branches = dict[bytes, tuple[bytes, ...]]
#: A cached tree: (graph version, interest version, this node's children or None, the
#: interested members it was computed for, the members below each child)
_Entry = tuple[int, int, "Hops | None", frozenset[bytes], Branches]


class _Graph:
    """One version of the graph: the nodes in id order, each one's confirmed
    neighbours by index, in id order."""

    __slots__ = ("_first", "adj", "ids", "index")

    def __init__(self, lists: Mapping[bytes, frozenset[bytes]]) -> None:
        self.ids = sorted(lists)
        self.index = {node: i for i, node in enumerate(self.ids)}
        index = self.index
        self.adj: list[list[int]] = [
            sorted(index[peer] for peer in lists[node]
                   if peer in index and node in lists[peer] and peer != node)
            for node in self.ids
        ]
        #: first_hops(): by source (this node, senders of off-tree pushes), the last few
        self._first: dict[int, list[int]] = {}

    def relink(self, lists: Mapping[bytes, frozenset[bytes]], nodes: Iterable[bytes]) -> bool:
        """Take the lists of ``nodes`` again, in place: each one's confirmed neighbours
        as a build from ``lists`` would give them. False (nothing changed) if one of
        ``nodes`` is not in this graph: it must be built again (the ids are numbered)."""
        index = self.index
        todo = []
        for node in nodes:
            i = index.get(node)
            if i is None:
                return False
            todo.append((i, node))
        empty: frozenset[bytes] = frozenset()
        for i, node in todo:
            self.adj[i] = sorted(index[peer] for peer in lists.get(node, empty)
                                 if peer in index and peer != node
                                 and node in lists.get(peer, empty))
        self._first.clear()
        return True

    def first_hops(self, source: int) -> list[int]:
        """For each node, the neighbour of ``source`` that starts a shortest path from
        ``source`` to it, the lowest index among equals (-1: unreachable, or ``source``
        itself). The last 16 sources asked are kept until the graph changes."""
        cached = self._first.get(source)
        if cached is not None:
            return cached
        first = _first_hops(self.adj, source)
        if len(self._first) >= 16:
            self._first.pop(next(iter(self._first)))
        self._first[source] = first
        return first


def _first_hops(adj: list[list[int]], source: int, skip: int = -1) -> list[int]:
    """For each node, the neighbour of ``source`` that starts a shortest path from
    ``source`` to it that does not pass through ``skip``, the lowest index among
    equals (-1: no such path, or ``source`` itself)."""
    n = len(adj)
    first = [-1] * n
    seen = bytearray(n)
    seen[source] = 1
    if skip >= 0:
        seen[skip] = 1
    frontier = []
    for v in adj[source]:
        if not seen[v]:
            seen[v] = 1
            first[v] = v
            frontier.append(v)
    while frontier:
        nxt = []
        for u in frontier:
            hop = first[u]
            for v in adj[u]:
                if not seen[v]:
                    seen[v] = 1
                    first[v] = hop
                    nxt.append(v)
        frontier = nxt
    return first


def _closer(adj: list[list[int]], dist: list[int], parent: list[int],
            frontier: list[int]) -> None:
    """Breadth-first from ``frontier`` (nodes whose ``dist`` just dropped), updating
    only the nodes it brings closer: ``dist`` stays each node's distance to the nearest
    source, ``parent`` a neighbour one step closer."""
    while frontier:
        nxt = []
        for u in frontier:
            d = dist[u] + 1
            for v in adj[u]:
                if d < dist[v]:
                    dist[v] = d
                    parent[v] = u
                    nxt.append(v)
        frontier = nxt


def steiner_tree(adj: list[list[int]], root: int, terminals: Iterable[int]) -> dict[int, int]:
    """The Takahashi-Matsuyama tree rooted at ``root`` spanning the ``terminals``
    reachable from it: each tree node but the root, mapped to its parent.

    ``dist`` is every node's distance to the tree so far and ``parent`` its next step
    toward it; attaching a path sets its nodes to 0 and searches on only from them."""
    n = len(adj)
    unreached = n + 1
    dist = [unreached] * n
    parent = [-1] * n
    dist[root] = 0
    _closer(adj, dist, parent, [root])
    tree: dict[int, int] = {}
    left = sorted(t for t in set(terminals) if t != root and dist[t] < unreached)
    while left:
        best = min(left, key=lambda t: (dist[t], t))
        branch = []
        v = best
        while dist[v]:
            tree[v] = parent[v]
            branch.append(v)
            v = parent[v]
        for v in branch:
            dist[v] = 0
        _closer(adj, dist, parent, branch)
        left = [t for t in left if dist[t]]
    return tree


class _OwnLinks(Mapping[bytes, frozenset[bytes]]):
    """The nodes' lists with this node's own replaced by its live links (read-only,
    without copying the lists)."""

    __slots__ = ("_lists", "_me", "_own")

    def __init__(self, lists: Mapping[bytes, frozenset[bytes]], me: bytes,
                 own: frozenset[bytes]) -> None:
        self._lists, self._me, self._own = lists, me, own

    def __getitem__(self, node: bytes) -> frozenset[bytes]:
        return self._own if node == self._me else self._lists[node]

    def __iter__(self) -> Iterator[bytes]:
        yield from self._lists
        if self._me not in self._lists:
            yield self._me

    def __len__(self) -> int:
        return len(self._lists) + (self._me not in self._lists)


class Routes:
    """The mesh graph as this node sees it, the trees over it, and their cache.

    Args:
        me: this node's id.
        max_cache: trees kept (least recently used dropped first), >= 1.
    """

    def __init__(self, me: bytes, *, max_cache: int = 4096) -> None:
        if max_cache < 1:
            raise ValueError("max_cache must be >= 1")
        self.me = me
        self.max_cache = max_cache
        self.version = 0  #: bumps when the graph changes
        self.lost = 0  #: bumps when a list loses a link, or a node is forgotten
        self._lists: dict[bytes, frozenset[bytes]] = {}
        self._own: frozenset[bytes] | None = None
        self._graph: _Graph | None = None
        #: (origin, topic) -> (graph version, interest version, hops, interested, branches)
        self._cache: OrderedDict[tuple[bytes, str], _Entry] = OrderedDict()
        self.computed = 0  #: trees computed (cache misses)
        self.built = 0  #: graphs built from every list
        self.relinked = 0  #: changed lists taken into the built graph in place

    # -- the graph ----------------------------------------------------------------------

    def set_graph(self, lists: Mapping[bytes, Iterable[bytes]]) -> None:
        """Every node's link list at once (those not in ``lists`` are forgotten)."""
        new = {node: frozenset(links) for node, links in lists.items()}
        if new != self._lists:
            self._lists = new
            self._changed()

    def set_list(self, node: bytes, links: Iterable[bytes] | None) -> None:
        """One node's new link list (None: forget the node). This node's own list
        changes nothing once ``set_own_links`` was called."""
        mine = node == self.me and self._own is not None
        if links is None:
            if self._lists.pop(node, None) is not None and not mine:
                self._changed()
            return
        new = frozenset(links)
        old = self._lists.get(node)
        if old != new:
            self._lists[node] = new
            if not mine:
                self._changed(node, old, new)

    def set_own_links(self, peers: Iterable[bytes]) -> None:
        """This node's live links: they replace its own list at once (an edge to a peer
        still counts only once the peer lists this node too)."""
        own = frozenset(peers)
        if own != self._own:
            old, self._own = self._own, own
            self._changed(self.me, old, own)

    def _changed(self, node: bytes | None = None, old: frozenset[bytes] | None = None,
                 new: frozenset[bytes] = frozenset()) -> None:
        """The graph changed: ``node``'s list went from ``old`` to ``new`` (None: a node
        was forgotten). A built graph takes a changed list in place when every node it
        touches is in it already (a link opened or closed between known nodes: the
        common case), else it is built again on the next question."""
        self.version += 1
        if node is None or (old is not None and not old <= new):
            self.lost += 1
        graph = self._graph
        if graph is None:
            return
        if node is None or old is None or not graph.relink(
                self._effective(), {node, *old, *new}):
            self._graph = None
            return
        self.relinked += 1

    def _effective(self) -> Mapping[bytes, frozenset[bytes]]:
        """Every node's list, this node's own live links in place of its own list."""
        if self._own is None:
            return self._lists
        return _OwnLinks(self._lists, self.me, self._own)

    @property
    def graph(self) -> _Graph:
        """The current graph (built on first use after a change it could not take in
        place)."""
        if self._graph is None:
            lists = self._lists
            if self._own is not None:
                lists = {**lists, self.me: self._own}
            self._graph = _Graph(lists)
            self.built += 1
        return self._graph

    def edges(self) -> set[tuple[bytes, bytes]]:
        """The confirmed edges, each once (lower id first)."""
        g = self.graph
        return {(g.ids[a], g.ids[b]) for a, peers in enumerate(g.adj) for b in peers if a < b}

    # -- trees ------------------------------------------------------------------------

    def next_hops(self, origin: bytes, topic: str, interested: frozenset[bytes],
                  interest_version: int) -> Hops | None:
        """This node's children in ``origin``'s tree for ``topic`` (each leads to an
        interested node), in id order; () if this node is a leaf of it; None if
        ``origin`` or this node is not in the graph or this node is not on the tree.
        Cached per (origin, topic) until ``version`` changes or ``interest_version``
        does with another set of ``interested`` members."""
        return self._entry(origin, topic, interested, interest_version)[2]

    def branches(self, origin: bytes, topic: str, interested: frozenset[bytes],
                 interest_version: int) -> Branches:
        """For each of ``next_hops``' children, the interested members below it on the
        tree (those a push to it is meant for); cached with the tree."""
        return self._entry(origin, topic, interested, interest_version)[4]

    def _entry(self, origin: bytes, topic: str, interested: frozenset[bytes],
               interest_version: int) -> _Entry:
        key = (origin, topic)
        cache = self._cache
        hit = cache.get(key)
        if hit is not None and hit[0] == self.version and (
                hit[1] == interest_version or hit[3] == interested):
            cache.move_to_end(key)
            if hit[1] != interest_version:  # another member's interest changed: not these
                hit = cache[key] = (hit[0], interest_version, hit[2], hit[3], hit[4])
            return hit
        hops, branches = self._compute(origin, interested)
        entry = cache[key] = (self.version, interest_version, hops, interested, branches)
        cache.move_to_end(key)
        if len(cache) > self.max_cache:
            cache.popitem(last=False)
        return entry

    def _compute(self, origin: bytes, interested: frozenset[bytes]
                 ) -> tuple[Hops | None, Branches]:
        """This node's children on the tree (None when it is not on it, or the origin
        or it is not in the graph), and the interested members below each."""
        self.computed += 1
        g = self.graph
        root, me = g.index.get(origin), g.index.get(self.me)
        if root is None or me is None:
            return None, {}
        index = g.index
        tree = steiner_tree(g.adj, root, (index[t] for t in interested if t in index))
        if me != root and me not in tree:
            return None, {}
        below: dict[int, list[bytes]] = {}
        for member in sorted(interested):
            v = index.get(member)
            while v is not None and v in tree and tree[v] != me:
                v = tree[v]  # up toward the root, until a child of this node
            if v is not None and v in tree:
                below.setdefault(v, []).append(member)
        children = sorted(v for v, p in tree.items() if p == me)
        return (tuple(g.ids[v] for v in children),
                {g.ids[v]: tuple(below.get(v, ())) for v in children})

    def via(self, members: Iterable[bytes], sender: bytes) -> list[bytes]:
        """Those of ``members`` whose shortest path from ``sender`` starts with the link
        to this node (the lowest id among equals, as ``toward`` picks at ``sender``):
        the members a push from ``sender`` was meant for, as far as this node's view
        of the mesh tells. When ``sender`` is not in the graph: every member this
        node can reach."""
        g = self.graph
        me, other = g.index.get(self.me), g.index.get(sender)
        if me is None:
            return []
        index = g.index
        if other is None:
            mine = g.first_hops(me)
            return [m for m in members if (i := index.get(m)) is not None and mine[i] >= 0]
        theirs = g.first_hops(other)
        return [m for m in members if (i := index.get(m)) is not None and theirs[i] == me]

    def tree(self, origin: bytes, interested: frozenset[bytes]) -> dict[bytes, bytes]:
        """The whole tree (each node but the origin, mapped to its parent); empty if
        ``origin`` is not in the graph. Not cached: for tests and measurements."""
        g = self.graph
        root = g.index.get(origin)
        if root is None:
            return {}
        terms = (g.index[t] for t in interested if t in g.index)
        return {g.ids[v]: g.ids[p] for v, p in steiner_tree(g.adj, root, terms).items()}

    def toward_without(self, targets: Iterable[bytes], avoid: bytes) -> dict[bytes, bytes]:
        """For each of ``targets``, the next hop on a shortest path from this node that
        does not pass through ``avoid`` (the lowest id among equals); those no such path
        reaches are left out. A search of the graph per call: for the rare pushes that
        must not go back the way they came (``InterestRouting``)."""
        g = self.graph
        me = g.index.get(self.me)
        if me is None:
            return {}
        first = _first_hops(g.adj, me, g.index.get(avoid, -1))
        index = g.index
        return {t: g.ids[first[i]] for t in targets
                if (i := index.get(t)) is not None and first[i] >= 0}

    def toward(self, target: bytes) -> bytes | None:
        """The next hop on a shortest path from this node to ``target`` (the lowest id
        among equals); None if ``target`` is unreachable, unknown, or this node."""
        g = self.graph
        me, to = g.index.get(self.me), g.index.get(target)
        if me is None or to is None:
            return None
        hop = g.first_hops(me)[to]
        return g.ids[hop] if hop >= 0 else None

    @property
    def cached(self) -> int:
        """Trees in the cache."""
        return len(self._cache)

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

Pure (no I/O, no trio). Node ids are numbered (in id order) once per graph version, so
the searches run over lists of ints; one tree costs a breadth-first search from the
origin and, per interested node attached, a search limited to the nodes the new
branch brings closer (a few ms for 1,000 nodes, docs/interest.md). Trees are cached
per (origin, topic) until the graph, or the members interested in the topic, change;
at most ``max_cache``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

Hops = tuple[bytes, ...]


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
        self._first: list[int] | None = None  # toward(): first hop from me to each node

    def first_hops(self, me: int) -> list[int]:
        """For each node, the neighbour of ``me`` that starts a shortest path to it
        (-1: unreachable, or ``me`` itself)."""
        if self._first is None:
            first = [-1] * len(self.ids)
            adj = self.adj
            seen = bytearray(len(self.ids))
            seen[me] = 1
            frontier = []
            for v in adj[me]:
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
            self._first = first
        return self._first


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
        self._lists: dict[bytes, frozenset[bytes]] = {}
        self._own: frozenset[bytes] | None = None
        self._graph: _Graph | None = None
        #: (origin, topic) -> (graph version, interest version, hops, interested)
        self._cache: OrderedDict[tuple[bytes, str],
                                 tuple[int, int, Hops | None, frozenset[bytes]]] = OrderedDict()
        self.computed = 0  #: trees computed (cache misses)

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
        if self._lists.get(node) != new:
            self._lists[node] = new
            if not mine:
                self._changed()

    def set_own_links(self, peers: Iterable[bytes]) -> None:
        """This node's live links: they replace its own list at once (an edge to a peer
        still counts only once the peer lists this node too)."""
        own = frozenset(peers)
        if own != self._own:
            self._own = own
            self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._graph = None

    @property
    def graph(self) -> _Graph:
        """The current graph (built on first use after a change)."""
        if self._graph is None:
            lists = self._lists
            if self._own is not None:
                lists = {**lists, self.me: self._own}
            self._graph = _Graph(lists)
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
        key = (origin, topic)
        cache = self._cache
        hit = cache.get(key)
        if hit is not None and hit[0] == self.version and (
                hit[1] == interest_version or hit[3] == interested):
            cache.move_to_end(key)
            if hit[1] != interest_version:  # another member's interest changed: not these
                cache[key] = (hit[0], interest_version, hit[2], hit[3])
            return hit[2]
        hops = self._compute(origin, interested)
        cache[key] = (self.version, interest_version, hops, interested)
        cache.move_to_end(key)
        if len(cache) > self.max_cache:
            cache.popitem(last=False)
        return hops

    def _compute(self, origin: bytes, interested: frozenset[bytes]) -> Hops | None:
        self.computed += 1
        g = self.graph
        root, me = g.index.get(origin), g.index.get(self.me)
        if root is None or me is None:
            return None
        index = g.index
        tree = steiner_tree(g.adj, root, (index[t] for t in interested if t in index))
        if me != root and me not in tree:
            return None
        return tuple(g.ids[v] for v in sorted(v for v, p in tree.items() if p == me))

    def tree(self, origin: bytes, interested: frozenset[bytes]) -> dict[bytes, bytes]:
        """The whole tree (each node but the origin, mapped to its parent); empty if
        ``origin`` is not in the graph. Not cached: for tests and measurements."""
        g = self.graph
        root = g.index.get(origin)
        if root is None:
            return {}
        terms = (g.index[t] for t in interested if t in g.index)
        return {g.ids[v]: g.ids[p] for v, p in steiner_tree(g.adj, root, terms).items()}

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

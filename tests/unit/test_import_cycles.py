"""The package's imports form no cycle and point down the layers of
ARCHITECTURE.md (issue 14): every import counts, the ones under
TYPE_CHECKING and inside functions too, since a cycle there is a cycle in
the design even when Python would tolerate it at run time."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "condure"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from . import x`
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_imports_of_every_kind() -> None:
    g = graph()
    assert "condure.zhttp.packet" in g["condure.zhttp.flow"]  # from .packet import DATA
    assert "condure.server.http1" in g["condure.server.exchange"]  # from . import http1
    assert "condure.context" in g["condure.server.connection"]  # under TYPE_CHECKING
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


# ARCHITECTURE.md's layers, bottom first: a module may import its own layer and
# the ones below. A new module must be placed here.
LAYERS = [
    ("leaves", "errors log private"),
    ("codecs", "blocks config options metrics wsdeflate wsframe zhttp.packet zhttp.trace server.parser "
               "server.request server.http1 server.wshead server.access"),
    ("ZHTTP core", "zhttp.session zhttp.flow zhttp.wsmap handler.session handler.errors"),
    ("exchanges", "server.ports server.exchange server.wshandshake server.websocket server.req"),
    ("shells", "context timer zhttp.sockets server.listener server.tls server.modes "
               "server.connection server.http2 server.clientio server.outqueue server.timers "
               "client.service client.session client.link client.websocket client.context "
               "client.http1 client.connect client.request "
               "handler.request handler.websocket handler.sockets handler.prefork"),
    ("process", "__main__ app workers sizes pushpin connmgr debuglog wsgi"),
]
PACKAGES = {"condure", "condure.server", "condure.client", "condure.zhttp", "condure.handler"}


def layer_of() -> dict[str, int]:
    return {f"condure.{m}": i for i, (_, mods) in enumerate(LAYERS) for m in mods.split()}


def test_every_module_has_a_layer() -> None:
    placed = layer_of()
    assert sorted(set(graph()) - set(placed) - PACKAGES) == []
    assert sorted(set(placed) - set(graph())) == []  # no stale names


def test_imports_point_down_the_layers() -> None:
    placed = layer_of()
    upward = [f"{m} ({LAYERS[placed[m]][0]}) imports {d} ({LAYERS[placed[d]][0]})"
              for m, deps in sorted(graph().items()) if m in placed
              for d in sorted(deps) if d in placed and placed[d] > placed[m]]
    assert upward == []

"""Hardware targets of a run on a Ray cluster: the ``[targets]`` and ``[ray]`` config tables, and
which cluster nodes belong to which target. Pure standard library (Ray is not imported here), so
a config is validated the same way whether or not Ray is installed.

A **target** is a name (it names ``RUN_DIR/targets/<name>/``) and a Ray label selector: a table of
label key → selector value, in Ray's syntax (``"spr"``, ``"!spr"``, ``"in(spr,emr)"``,
``"!in(spr,emr)"``). A bare string is shorthand for the label :data:`TARGET_LABEL`::

    [targets]
    spr = "spr"                                  # nodes started with --labels=sparsebench.target=spr
    zen5 = { "sparsebench.target" = "zen5" }     # the same, spelled out
    big = { "sparsebench.target" = "in(spr,emr)", "ray.io/market-type" = "on-demand" }

Without ``[targets]`` every distinct value of :data:`TARGET_LABEL` among the cluster's live nodes
is one target. ``[ray]`` holds the fault settings: ``max_retries`` (re-runs of a unit of work
whose node died, on another node of the same target) and ``target_timeout_s`` (how long a target
may have no live node before its remaining cells are recorded ``skipped``).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from profiler.errors import ConfigError

#: the node label that names a hardware target (``ray start --labels=sparsebench.target=spr``)
TARGET_LABEL = "sparsebench.target"
#: target names become folder names
TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Ray's label syntax (Kubernetes label rules): a key is an optional DNS-subdomain prefix and a
# name; a selector value is a value, optionally negated with "!", or in(...) / !in(...) of values.
_VALUE = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"^(?:[a-z0-9](?:[a-z0-9.-]{{0,251}}[a-z0-9])?/)?{_VALUE}$")
_SELECTOR = re.compile(rf"^(!?)(?:in\(({_VALUE}(?:, ?{_VALUE})*)\)|({_VALUE}))$")
SELECTOR_FORMS = '"v", "!v", "in(v1,v2)" or "!in(v1,v2)"'
RAY_KEYS = ("max_retries", "target_timeout_s")


@dataclass(frozen=True)
class RaySettings:
    """``[ray]``: ``max_retries`` (0-100: times Ray re-runs a unit whose node died, on another node
    of the same target), ``target_timeout_s`` (seconds, > 0: how long a target may have no live
    node before its remaining cells are recorded ``skipped``)."""

    max_retries: int = 3
    target_timeout_s: float = 300.0


def parse_ray(raw: Any) -> RaySettings:
    """The ``[ray]`` table. Raises ConfigError naming the key and its valid range."""
    if not isinstance(raw, dict):
        raise ConfigError(f"ray: must be a table ([ray]), got {raw!r}")
    for k in raw:
        if k not in RAY_KEYS:
            raise ConfigError(f"ray.{k}: unknown key; valid keys: {', '.join(RAY_KEYS)}")
    retries = raw.get("max_retries", RaySettings.max_retries)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
        raise ConfigError(f"ray.max_retries: must be an integer in [0, 100], got {retries!r}")
    timeout = raw.get("target_timeout_s", RaySettings.target_timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 7 * 86_400:
        raise ConfigError(f"ray.target_timeout_s: must be a number of seconds in (0, 604800], got {timeout!r}")
    return RaySettings(max_retries=retries, target_timeout_s=float(timeout))


def parse_targets(raw: Any) -> dict[str, dict[str, str]]:
    """The ``[targets]`` table as ``{name: label selector}`` (shorthand strings expanded). Raises
    ConfigError naming ``targets.<name>`` for a bad name, key or selector value."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f'targets: a table of name = "label value" or name = {{ "label" = "selector" }} '
                          f"entries, at least one, got {raw!r}")
    out: dict[str, dict[str, str]] = {}
    for name, sel in raw.items():
        if not TARGET_NAME.match(str(name)):
            raise ConfigError(f"targets.{name}: a target name is 1-63 letters, digits, '.', '_' or '-' "
                              "(it names the folder RUN_DIR/targets/<name>)")
        if isinstance(sel, str):
            sel = {TARGET_LABEL: sel}
        if not isinstance(sel, dict) or not sel:
            raise ConfigError(f'targets.{name}: a label value (shorthand for {{ "{TARGET_LABEL}" = value }}) or a '
                              f"non-empty table of label = selector, got {sel!r}")
        for key, value in sel.items():
            if not _KEY.match(str(key)):
                raise ConfigError(f"targets.{name}: {key!r} is not a Ray label key ([prefix/]name of letters, "
                                  "digits, '.', '_', '-')")
            if not isinstance(value, str) or not _SELECTOR.match(value):
                raise ConfigError(f"targets.{name}: label {key!r}: {value!r} is not a selector; valid forms: "
                                  f"{SELECTOR_FORMS}")
        out[str(name)] = {str(k): v for k, v in sel.items()}
    return out


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a node with ``labels`` satisfies every condition of ``selector`` (Ray's semantics:
    ``v`` / ``in(..)`` need the label with that value; ``!v`` / ``!in(..)`` also match a node
    without the label)."""
    for key, expr in selector.items():
        m = _SELECTOR.match(expr)
        if m is None:
            return False
        negate, listed, single = m.groups()
        values = {v.strip() for v in listed.split(",")} if listed else {single}
        has = labels.get(key) in values
        if has == bool(negate):
            return False
    return True


@dataclass(frozen=True)
class NodeInfo:
    """One Ray node as the driver sees it: ``node_id`` (hex), ``alive``, ``labels``, logical
    ``cpus`` and ``gpus`` (counts)."""

    node_id: str
    alive: bool
    labels: dict[str, str]
    cpus: int
    gpus: int

    @classmethod
    def from_ray(cls, d: Mapping[str, Any]) -> "NodeInfo":
        """From one entry of ``ray.nodes()``."""
        res = d.get("Resources") or {}
        return cls(node_id=str(d.get("NodeID", "")), alive=bool(d.get("Alive")), labels=dict(d.get("Labels") or {}),
                   cpus=int(res.get("CPU", 0)), gpus=int(res.get("GPU", 0)))


@dataclass
class Target:
    """A resolved target: its ``selector``, and the whole-node reservation of one unit of work
    (``cpus``, ``gpus``: the smallest live node of the target, so a unit fits on each of them)."""

    name: str
    selector: dict[str, str]
    cpus: int = 1
    gpus: int = 0
    notes: list[str] = field(default_factory=list)


def label_summary(nodes: Iterable[NodeInfo]) -> str:
    """``sparsebench.target: a, b; other.label: x`` over the nodes' labels (Ray's own aside)."""
    values: dict[str, set[str]] = {}
    for n in nodes:
        for k, v in n.labels.items():
            if not k.startswith("ray.io/"):
                values.setdefault(k, set()).add(v)
    return "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(values.items())) or "(no labels)"


def default_targets(nodes: list[NodeInfo]) -> dict[str, dict[str, str]]:
    """One target per distinct value of :data:`TARGET_LABEL` among the live nodes. Raises
    ConfigError when no live node carries the label."""
    values = sorted({n.labels[TARGET_LABEL] for n in nodes if n.alive and TARGET_LABEL in n.labels})
    if not values:
        raise ConfigError(f"targets: no live node of the cluster carries the label {TARGET_LABEL!r} (labels there: "
                          f"{label_summary(n for n in nodes if n.alive)}); start workers with `ray start "
                          f"--address=HEAD:6379 --labels={TARGET_LABEL}=NAME` or list [targets] in the config")
    bad = [v for v in values if not TARGET_NAME.match(v)]
    if bad:
        raise ConfigError(f"targets: label value {bad[0]!r} cannot name a target folder; list [targets] in the config")
    return {v: {TARGET_LABEL: v} for v in values}


def dead_only_targets(nodes: list[NodeInfo]) -> list[str]:
    """Values of :data:`TARGET_LABEL` that only dead nodes carry (what :func:`default_targets`
    leaves out), sorted."""
    live = {n.labels.get(TARGET_LABEL) for n in nodes if n.alive}
    return sorted({n.labels[TARGET_LABEL] for n in nodes if not n.alive and TARGET_LABEL in n.labels} - live)


def resolve_targets(declared: Mapping[str, dict[str, str]], nodes: list[NodeInfo]) -> dict[str, Target]:
    """Each declared target with its whole-node reservation. A target no node of the cluster has
    ever matched (live or dead) is an unknown label: ConfigError naming it and the labels present.
    A target whose matching nodes are all dead resolves (its cells wait for a node, then are
    skipped after ``target_timeout_s``)."""
    out: dict[str, Target] = {}
    for name, sel in declared.items():
        matching = [n for n in nodes if selector_matches(sel, n.labels)]
        if not matching:
            wanted = ", ".join(f"{k}={v}" for k, v in sel.items())
            raise ConfigError(f"targets.{name}: no node of the cluster matches {wanted}; labels of its nodes: "
                              f"{label_summary(nodes)}")
        live = [n for n in matching if n.alive] or matching
        t = Target(name, dict(sel), cpus=max(1, min(n.cpus for n in live)), gpus=min(n.gpus for n in live))
        if len({(n.cpus, n.gpus) for n in live}) > 1:
            t.notes.append(f"target {name}: its nodes differ in CPU/GPU count; each unit reserves {t.cpus} CPU(s) "
                           f"and {t.gpus} GPU(s), the smallest node's, so larger nodes may run two units at once")
        out[name] = t
    return out


class TargetWatch:
    """How long each target has been without a live node. ``clock`` (seconds, monotonic) is
    injected so tests drive it without sleeping."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s, self.clock = timeout_s, clock
        self._since: dict[str, float] = {}

    def update(self, name: str, has_live_node: bool) -> bool:
        """Record whether ``name`` has a live node now; True once it has had none for longer than
        the timeout (the caller then gives up on it)."""
        if has_live_node:
            self._since.pop(name, None)
            return False
        since = self._since.setdefault(name, self.clock())
        return self.clock() - since > self.timeout_s

    def waited_s(self, name: str) -> float:
        """Seconds ``name`` has been without a live node (0 while it has one)."""
        return self.clock() - self._since[name] if name in self._since else 0.0


def live_targets(targets: Mapping[str, Target], nodes: list[NodeInfo]) -> dict[str, bool]:
    """Whether each target has a live node that matches it and can hold a whole-node unit."""
    return {name: any(n.alive and n.cpus >= t.cpus and n.gpus >= t.gpus and selector_matches(t.selector, n.labels)
                      for n in nodes) for name, t in targets.items()}

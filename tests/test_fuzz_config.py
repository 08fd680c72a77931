"""Seeded fuzz of the config loader: random TOML documents built from the real sections, keys,
plugin names and parameter names, with random values of random types (non-finite numbers
included). Every call ends within a bound, and either returns a Config or raises ConfigError
naming a key; nothing else escapes."""
from __future__ import annotations

import copy
import os
import signal
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings, strategies as st

from profiler.config import MATRIX_KEYS, RUN_KEYS, SECTIONS, MeasureSpec, load_config
from profiler.targets import RAY_KEYS
from profiler.errors import ConfigError
from profiler.plugins import ACCELERATORS, METERS, PRUNERS, TASKS
from tests.conftest import tiny_config
from tests.faults_util import toml_text

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 5000))
BOUND_S = 5.0  # one parse builds every plugin once; far below this unless something hangs
# tasks whose constructors read datasets from disk are left out: the fuzz is of the loader
SLOW_TASKS = {"sst2", "text-classification"}

text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)
# plausible numbers (so that documents get past the first check) next to absurd ones
number = st.one_of(st.integers(-3, 300), st.sampled_from([0, 1, 2, 0.0, 0.05, 0.5, 0.9, 1.0, 2.0, 1e9, -1.0, 2**70]),
                   st.floats(allow_nan=True, allow_infinity=True))
scalar = st.one_of(number, st.booleans(), text)
value = st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(text, scalar, max_size=2))


def table(known, rare_unknown: bool = True) -> st.SearchStrategy:
    """A table of mostly real keys (an unknown one now and then) with random values."""
    key = st.sampled_from(sorted(known)) if known else text
    if rare_unknown or not known:
        key = st.one_of(key, key, key, text)
    return st.dictionaries(key, value, max_size=4)


def plugin_entry(registry, exclude=frozenset()) -> st.SearchStrategy:
    """A plugin table: mostly a real name with its real parameter names; sometimes a bare name,
    a table without a name, or any value."""
    names = [n for n in registry.names() if n not in exclude]

    @st.composite
    def entry(draw):
        name = draw(st.one_of(st.sampled_from(names), st.sampled_from(names), text))
        params = registry.params(name) if name in registry else {}
        d = draw(table(params))
        return {**d, "name": name} if draw(st.integers(0, 9)) else d

    return st.one_of(entry(), entry(), entry(), st.sampled_from(names), value)


def plugin_list(registry, exclude=frozenset()) -> st.SearchStrategy:
    return st.one_of(st.lists(plugin_entry(registry, exclude), min_size=1, max_size=2), plugin_entry(registry, exclude))


random_document = st.fixed_dictionaries(
    {"tasks": plugin_list(TASKS, SLOW_TASKS), "pruners": plugin_list(PRUNERS), "accelerators": plugin_list(ACCELERATORS)},
    optional={"run": table(RUN_KEYS), "measure": table(MeasureSpec.__dataclass_fields__), "matrix": table(MATRIX_KEYS),
              "meter": plugin_entry(METERS), "ray": table(RAY_KEYS),
              "targets": st.one_of(st.dictionaries(text, st.one_of(text, st.dictionaries(text, text, max_size=2)),
                                                   max_size=3), value)},
)
VALID = tiny_config(meter={"name": "estimate", "tdp_w": 50.0},
                    accelerators=[{"name": "torch-fp32"}, {"name": "sparse-cpu", "repeats": 3}])
LEAVES = [(sec, None, k) for sec in ("run", "measure", "matrix", "meter") for k in VALID[sec]] + [
    (sec, i, k) for sec in ("tasks", "pruners", "accelerators") for i, e in enumerate(VALID[sec]) for k in e]


@st.composite
def mutated_document(draw):
    """A valid config with one to three leaves set to random values (or a junk key added): the
    documents that reach the deep checks (ranges, sibling consistency, plugin constructors)."""
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        sec, i, key = draw(st.sampled_from(LEAVES))
        target = doc[sec] if i is None else doc[sec][i]
        if sec == "measure" and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(MeasureSpec.__dataclass_fields__)))
        target[key] = draw(value)
    if draw(st.integers(0, 19)) == 0:
        doc["xjunk"] = draw(value)
    return doc


document = st.one_of(random_document, mutated_document(), mutated_document())


def _timeout(signum, frame):
    raise TimeoutError(f"one config load took more than {BOUND_S} s")


_DIR = Path(tempfile.mkdtemp(prefix="fuzz-config-"))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(document)
def test_config_loader_fuzz(doc):
    path = _DIR / "c.toml"
    path.write_text(toml_text(doc), encoding="utf-8")
    old = signal.signal(signal.SIGALRM, _timeout)
    signal.setitimer(signal.ITIMER_REAL, BOUND_S)
    try:
        load_config(path)
        event("accepted")
    except ConfigError as exc:
        head = str(exc).split(":", 1)[0]
        first = head.split(".", 1)[0].split("[", 1)[0]
        event(f"rejected at {first}")
        assert first in SECTIONS or first in doc, f"rejection names no key: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)

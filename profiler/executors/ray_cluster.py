"""Connecting the driver to a Ray cluster, with every failure raised before any work: a
:class:`ConfigError` for Ray not installed or an address that is no HOST:PORT (a Ray Client
address among them), a :class:`SetupError` for a cluster that cannot be found, reached or
connected to (a port that is not a Ray head among them)."""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

from profiler.errors import ConfigError, SetupError
from profiler.targets import NodeInfo

INSTALL_HINT = "pip install 'sparsebench[ray]' (or: pip install 'ray>=2.60')"
#: seconds to wait for the cluster's GCS port to accept a TCP connection
CONNECT_TIMEOUT_S = 5.0


def import_ray() -> Any:
    """The ``ray`` module. Raises ConfigError naming ``--executor ray`` and how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray: Ray is not installed ({exc}); {INSTALL_HINT}") from None
    return ray


def resolve_address(address: str | None) -> str:
    """The cluster's ``HOST:PORT``: ``address`` itself, or for None / ``"auto"`` the one Ray would
    use (``RAY_ADDRESS``, else the cluster last started on this machine with ``ray start``).
    Raises ConfigError for a Ray Client address or when there is no cluster to find."""
    env = os.environ.get("RAY_ADDRESS", "")
    given_by = "RAY_ADDRESS" if address in (None, "auto") and env else "--address"
    shown = env if given_by == "RAY_ADDRESS" else address
    if shown and shown.startswith("ray://"):
        raise ConfigError(f"{given_by}: {shown} is a Ray Client address, which sparsebench does not use; run "
                          "sparsebench on a node of the cluster (e.g. the head) with --address HEAD_IP:6379")
    if address and address != "auto":
        return address
    from ray._private.services import canonicalize_bootstrap_address  # Ray's own lookup of "auto"

    try:
        found = canonicalize_bootstrap_address(address or "auto")
    except ValueError as exc:  # Ray's parser: "garbage", "http://HOST:8265" (a Jobs address), "HOST" alone
        raise ConfigError(f"{given_by}: {shown!r} is not HOST:PORT (the head's GCS address, e.g. 10.0.0.5:6379): "
                          f"{exc}") from None
    except ConnectionError as exc:
        found, why = None, str(exc)
    else:
        why = "no RAY_ADDRESS and no cluster started on this machine"
    if not found:
        raise SetupError(f"--address: no Ray cluster found ({why}); start one (`ray start --head`) or give "
                          "--address HEAD_IP:6379")
    return found


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S, given_by: str = "--address") -> None:
    """Raise ConfigError unless ``HOST:PORT`` accepts a TCP connection within ``timeout_s`` (ray.init
    itself would retry for minutes); ``given_by`` names where the address came from in the message."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{given_by}: {address!r} is not HOST:PORT (the head's GCS address, e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as sock:
            # a cluster with TLS (RAY_USE_TLS) answers a plaintext preface with a TLS alert: not checked there
            speaks = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true") or speaks_http2(sock)
    except OSError as exc:
        raise SetupError(f"{given_by}: cannot reach a Ray cluster at {address} ({exc.strerror or exc}); is the head "
                          "started (`ray start --head`) and the port open from here?") from None
    if not speaks:  # ray.init would retry the handshake for minutes, printing only Ray's own log lines
        raise SetupError(f"{given_by}: {address} answers but is not a Ray head (its GCS speaks gRPC; this port "
                          "does not: the dashboard's 8265 or another service?); give the GCS port, 6379 by default")


#: an HTTP/2 client's connection preface and an empty SETTINGS frame (RFC 9113, sections 3.4 and 6.5)
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def speaks_http2(sock: socket.socket) -> bool:
    """Whether the server on ``sock`` answers an HTTP/2 preface with a SETTINGS frame (frame type 4
    in the first 9-byte header), as every gRPC server, Ray's GCS among them, does; an HTTP/1
    server answers with text or closes. Times out with the socket's timeout (False)."""
    try:
        sock.sendall(HTTP2_PREFACE)
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:
        return False
    return head[3] == 4


def connect(address: str | None) -> Any:
    """Connect this process to the cluster as its driver and return the ``ray`` module.

    Worker stdout is not forwarded (rows and errors come back as data). Raises ConfigError."""
    ray = import_ray()
    resolved = resolve_address(address)
    from_env = address in (None, "auto") and bool(os.environ.get("RAY_ADDRESS"))
    check_reachable(resolved, given_by="RAY_ADDRESS" if from_env else "--address")
    try:
        ray.init(address=resolved, log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError by cause
        raise SetupError(f"--address: cannot connect to the Ray cluster at {resolved}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
    return ray


def cluster_nodes(ray: Any) -> list[NodeInfo]:
    """Every node the cluster knows, live and dead."""
    return [NodeInfo.from_ray(d) for d in ray.nodes()]

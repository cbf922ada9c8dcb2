"""``requests`` sessions whose connections go to an address decided beforehand.

The outbound-address policy (SPEC §9.6 rule 2) checks the addresses a host
resolves to; connecting by name afterwards would resolve it again, and a
hostile DNS server could answer differently the second time (DNS rebinding).
So each hop resolves once, checks, and connects to the checked address, while
the Host header, TLS SNI and certificate verification still use the host name.

Sessions ignore proxy environment variables (``trust_env = False``): a proxy
would make the connection, not us, and the check would mean nothing.
"""

from __future__ import annotations

import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection


class _PinnedHTTPConnection(HTTPConnection):
    pinned_address: str | None = None

    def _new_conn(self) -> socket.socket:
        if self.pinned_address is None:
            return super()._new_conn()
        host = self._dns_host
        self._dns_host = self.pinned_address  # connect here; ``host`` stays the name
        try:
            return super()._new_conn()
        finally:
            self._dns_host = host


class _PinnedHTTPSConnection(HTTPSConnection):
    pinned_address: str | None = None

    def _new_conn(self) -> socket.socket:
        if self.pinned_address is None:
            return super()._new_conn()
        host = self._dns_host
        self._dns_host = self.pinned_address
        try:
            return super()._new_conn()
        finally:
            self._dns_host = host


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection
    pinned_address: str | None = None

    def _new_conn(self) -> Any:
        conn = super()._new_conn()
        conn.pinned_address = self.pinned_address
        return conn


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection
    pinned_address: str | None = None

    def _new_conn(self) -> Any:
        conn = super()._new_conn()
        conn.pinned_address = self.pinned_address
        return conn


class _PinnedPoolManager(PoolManager):
    def __init__(self, address: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._address = address
        self.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}

    def _new_pool(self, scheme: str, host: str, port: int, request_context: Any = None) -> Any:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.pinned_address = self._address
        return pool


class _PinnedAdapter(HTTPAdapter):
    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self.poolmanager = _PinnedPoolManager(
            self._address, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )


def session_to(address: str) -> requests.Session:
    """A session for one hop: every connection it makes goes to ``address``."""
    session = requests.Session()
    session.trust_env = False
    adapter = _PinnedAdapter(address)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session

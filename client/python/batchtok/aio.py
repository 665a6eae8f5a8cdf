"""batchtok.aio: the batchtokd client and an azure.core AsyncTokenCredential
for asyncio programs, as azure.identity.aio is to azure.identity.

    from batchtok.aio import BatchtokCredential
    async with BatchtokCredential(identity="batch-prod") as cred:
        token = await cred.get_token("https://batch.core.windows.net//.default")

Standard library only: batchtok.Client's protocol and codec over asyncio's
Unix socket streams, with its errors, timeout and reconnection.

One connection per Client carries any number of calls at once. Each request
has its own id and a task reading the connection hands each reply to the call
waiting for that id: the protocol lets a client pipeline, and batchtokd
answers requests that wait for a token in completion order. So a program's
concurrent calls take one of its uid's max_clients_per_uid connections, not
one each (a connection per call would be refused BUSY at that cap), and a call
waiting on a slow token fetch holds up no other (a lock around one
connection would). batchtokd reads at most 64 outstanding requests per
connection and leaves the rest queued in the socket until some are answered:
back-pressure, not an error.
"""

import asyncio

from . import (GET_TOKEN, HELLO, HELLO_ID, PING, REPLY, BatchtokError, Token, _access_token_type,
               _frame, _frame_length, _hello_frame, _Lost, _lost, _refused, _reply, _scope,
               _server, _split_frame, _timed_out, _token, _token_query, _unreachable,
               default_socket)

__all__ = ["Client", "BatchtokCredential", "BatchtokError", "Token"]


def _again(e):
    """A fresh copy of the exception that ended a connection, for each call
    it ends: one instance raised in many tasks would mix their tracebacks."""
    if isinstance(e, _Lost):
        return _Lost(e.message, e.status)
    return BatchtokError(str(e), e.status)


class _Connection:
    """One connection to batchtokd of one event loop: HELLO first, then the
    requests as they come, and a task that reads replies and hands each to
    the future of its id. Once the connection ends (ended is set), every call
    still waiting gets ended's exception, and the Client makes a new one."""

    def __init__(self, reader, writer):
        self.loop = asyncio.get_running_loop()
        self.ended = None
        self._reader, self._writer = reader, writer
        self._waiting = {}  # request id -> future of the reply's (type, body)
        self._next_id = 1
        # Version 1's requests need not wait for the HELLO reply.
        writer.write(_hello_frame())
        self._task = self.loop.create_task(self._read_replies())

    def send(self, type_, body):
        """Sends a request; returns its id and the future of its reply. The
        caller forget()s the id when it stops waiting."""
        if self.ended:
            raise _again(self.ended)
        while True:
            id_ = self._next_id
            self._next_id = self._next_id % 0xFFFFFFFF + 1
            if id_ not in self._waiting:
                break
        fut = self.loop.create_future()
        self._waiting[id_] = fut
        # A frame is small and each call sends one: the transport's buffer is
        # bounded by the caller's concurrency, so no drain(), which Python
        # before 3.10 does not allow from several tasks at once. A failed
        # write ends the connection, and the reader sees it.
        self._writer.write(_frame(type_, id_, body))
        return id_, fut

    def forget(self, id_):
        """The call of id_ has its reply, or gave up (timed out, cancelled):
        a reply that comes later is dropped."""
        self._waiting.pop(id_, None)

    async def _read_replies(self):
        ended = None
        try:
            while True:
                header = await self._reader.readexactly(4)
                data = await self._reader.readexactly(_frame_length(header))
                rtype, rid, body = _split_frame(data)
                if rid == HELLO_ID:
                    if rtype == HELLO | REPLY:
                        continue
                    raise _refused(rtype, body)
                fut = self._waiting.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_result((rtype, body))
        except asyncio.IncompleteReadError:
            ended = _lost(None)
        except OSError as e:
            ended = _lost(e)
        except BatchtokError as e:
            ended = e
        finally:
            # Also on cancellation: close(), or the loop shutting down.
            self._end(ended or BatchtokError("the connection to batchtokd was closed", 1))

    def _end(self, ended):
        if self.ended is None:
            self.ended = ended
        self._writer.close()
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(_again(self.ended))

    async def close(self):
        self._end(BatchtokError("the batchtok client was closed while waiting", 1))
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


class Client:
    """batchtok.Client for asyncio: one connection to batchtokd, made on
    first use, that any number of tasks of one event loop share, with calls
    in flight at once. When the daemon closed it (a restart,
    client_idle_timeout), a call that found it gone goes again, once, on a
    new one. Each call gives up after timeout seconds (None: never) with
    BatchtokError status 8; the connection stays, for the others."""

    def __init__(self, socket_path=None, timeout=60.0):
        self.socket_path = socket_path or default_socket()
        self.timeout = timeout
        self._conn = None
        self._lock = None
        self._lock_loop = None

    async def close(self):
        """Closes the connection; calls still waiting get BatchtokError. The
        next call connects again."""
        conn, self._conn = self._conn, None
        if conn is not None and conn.loop is asyncio.get_running_loop():
            await conn.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def _connect_lock(self):
        # An asyncio.Lock belongs to one loop: the Client may outlive it
        # (asyncio.run() called twice).
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def _usable(self, conn):
        return conn is not None and not conn.ended and conn.loop is asyncio.get_running_loop()

    async def _connection(self):
        if self._usable(self._conn):
            return self._conn
        # One task connects; those that come meanwhile use its connection.
        async with self._connect_lock():
            if not self._usable(self._conn):
                # An ended connection is closed already; one of another loop
                # is that loop's to close (asyncio.run() ends its tasks).
                self._conn = None
                try:
                    reader, writer = await asyncio.open_unix_connection(self.socket_path)
                except OSError as e:
                    raise _unreachable(self.socket_path, e) from None
                self._conn = _Connection(reader, writer)
            return self._conn

    async def _send(self, type_, body):
        conn = await self._connection()
        id_, fut = conn.send(type_, body)
        try:
            return await fut
        finally:
            conn.forget(id_)

    async def _exchange(self, type_, body):
        try:
            return await self._send(type_, body)
        except _Lost:
            pass
        # Gone before the reply came: again, once, on a new connection (every
        # request of this client is safe to repeat, as in batchtok.Client).
        try:
            return await self._send(type_, body)
        except _Lost as e:
            raise e.error() from None

    async def _request(self, type_, body):
        try:
            rtype, rbody = await asyncio.wait_for(self._exchange(type_, body), self.timeout)
        except asyncio.TimeoutError:
            raise _timed_out(self.timeout) from None
        return _reply(type_, rtype, rbody)

    async def get_token(self, identity=None, resource=None, scope=None, min_validity=0,
                        force_refresh=False):
        """A Token for identity (default: the daemon's) and resource (default:
        the identity's first) or scope ("RESOURCE/.default")."""
        body = _token_query(identity, resource, scope, min_validity, force_refresh)
        return _token(await self._request(GET_TOKEN, body))

    async def ping(self):
        return _server(await self._request(PING, b""))


class BatchtokCredential:
    """An azure.core AsyncTokenCredential backed by batchtokd, for the
    asynchronous Azure SDK clients (AsyncPipelineClient with
    AsyncBearerTokenCredentialPolicy): the daemon caches and refreshes, so
    every call is one round trip on a local socket. Close it (or use it with
    async with) to close its connection."""

    def __init__(self, identity=None, socket_path=None, client=None, timeout=60.0):
        self.identity = identity
        self._client = client or Client(socket_path, timeout)
        self._access_token = _access_token_type()

    async def get_token(self, *scopes, claims=None, tenant_id=None, **kwargs):
        t = await self._client.get_token(self.identity, force_refresh=bool(claims),
                                         **_scope(scopes))
        return self._access_token(t.access_token, int(t.expires_on))

    async def close(self):
        await self._client.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

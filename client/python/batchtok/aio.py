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

Client.watch() is an async iterator over a watch's events, on a connection
of its own, and Client.on_rotate() runs one in a task, as their
counterparts in batchtok do:

    async with batchtok.aio.Client() as c:
        async for event in c.watch(resource="https://redis.azure.com"):
            ...   # a batchtok.Token, or a batchtok.WatchError (the watch goes on)
"""

import asyncio
import inspect
import time

from . import (BACKOFF_FIRST, BACKOFF_MAX, BUSY, CHALLENGE, ERROR, FORGET, GET_TOKEN, HELLO, HELLO_ID,
               PING, REFRESH, REPLY, UNAVAILABLE, UNSUPPORTED, V1_REQUESTS, WATCH, WATCH_ID,
               BatchtokError, Token, WatchError, _access_token_type, _challenge_body, _error,
               _forget_body, _frame, _frame_length, _gave_up, _has, _hello_frame, _hello_reply,
               _log, _Lost, _lost, _record_reply, _refused, _reply, _retry_subscribe, _scope,
               _server, _split_frame, _timed_out, _token, _token_query, _unreachable,
               _unsupported, _watch_event, default_socket)

__all__ = ["Client", "BatchtokCredential", "BatchtokError", "Token", "WatchError", "Watch",
           "Rotation"]


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
        # From the HELLO reply: set once it came, or the connection ended.
        self.hello = asyncio.Event()
        self.requests = None
        self.server = ""
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
                        _, self.server, self.requests = _hello_reply(body)
                        self.hello.set()
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
        self.hello.set()
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
        if not _has(V1_REQUESTS, type_):
            # Only the HELLO reply says whether the daemon answers type_.
            await conn.hello.wait()
            if conn.requests is None:
                raise _again(conn.ended)
            if not _has(conn.requests, type_):
                raise _unsupported(type_, conn.server)
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
                        force_refresh=False, claims=None):
        """A Token for identity (default: the daemon's) and resource (default:
        the identity's first) or scope ("RESOURCE/.default"); with claims, a
        fresh one for a claims challenge (see batchtok.Client.get_token)."""
        if claims:
            body = _challenge_body(identity, resource, scope, min_validity, claims)
            return _token(await self._request(CHALLENGE, body))
        body = _token_query(identity, resource, scope, min_validity, force_refresh)
        return _token(await self._request(GET_TOKEN, body))

    async def ping(self):
        return _server(await self._request(PING, b""))

    async def refresh(self, identity=None, resource=None, scope=None):
        """Administrators: as batchtok.Client.refresh."""
        return _record_reply(await self._request(REFRESH,
                                                 _token_query(identity, resource, scope, 0)))

    async def forget(self, identity=None, all=False):
        """Administrators: as batchtok.Client.forget."""
        return _record_reply(await self._request(FORGET, _forget_body(identity, all)))

    def watch(self, identity=None, resource=None, min_validity=0, *, scope=None):
        """A Watch: an async iterator over the events of a WATCH, as
        batchtok.Client.watch's. It subscribes on its first step (or async
        with), on a connection of its own."""
        return Watch(self.socket_path, self.timeout,
                     _token_query(identity, resource, scope, min_validity))

    async def on_rotate(self, callback, identity=None, resource=None, min_validity=0, *,
                        scope=None, on_error=None):
        """As batchtok.Client.on_rotate, in a task of the running loop:
        callback(token) for each Token (a coroutine function is awaited),
        on_error(err) for the rest. Subscribes before it returns (and raises
        if it cannot); returns a Rotation, whose stop() is awaited."""
        w = self.watch(identity, resource, min_validity, scope=scope)
        await w.subscribe()
        return Rotation(w, callback, on_error)


class Watch:
    """batchtok.Watch for asyncio: async for over a WATCH's events on a
    connection of its own, each a batchtok.Token or a batchtok.WatchError
    (yielded: the watch goes on); the ERROR that ends the watch is raised as
    BatchtokError. It subscribes on the first step, on async with, or with
    subscribe(); it resubscribes by itself when the daemon restarts, with
    the same backoff and limit as batchtok.Watch. aclose(), from any task,
    ends the iteration (a step waiting for an event stops)."""

    def __init__(self, socket_path, timeout, query):
        self.socket_path = socket_path
        self.timeout = timeout
        self.token = None
        self._query = query
        self._reader = self._writer = None
        self._subscribed = False
        self._resubscribed = False
        self._lost = None  # why the watch is down, while it is
        self._delay = BACKOFF_FIRST
        self._closed = False
        self._ended = False
        self._wake = None  # made in the loop: aclose() ends a backoff wait

    def __aiter__(self):
        return self

    async def __aenter__(self):
        await self.subscribe()
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    async def aclose(self):
        """Ends the watch and closes its connection."""
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        self._drop()

    def _drop(self):
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            # The transport's end wakes a read waiting in another task.
            writer.close()

    async def subscribe(self):
        """Connects and sends the WATCH, if not done yet: raises what keeps
        the watch from starting (daemon not reachable, WATCH not
        supported)."""
        if self._subscribed:
            return
        try:
            await self._subscribe()
        except _Lost as e:
            self._ended = True
            raise e.error() from None
        except BatchtokError:
            self._ended = True
            raise
        self._subscribed = True

    async def _subscribe(self):
        if self._closed:
            raise StopAsyncIteration
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path), self.timeout)
        except OSError as e:
            raise _unreachable(self.socket_path, e) from None
        except asyncio.TimeoutError:
            raise _timed_out(self.timeout) from None
        if self._closed:  # aclose() came meanwhile
            self._drop()
            raise StopAsyncIteration
        try:
            self._writer.write(_hello_frame())
            rtype, rid, body = await asyncio.wait_for(self._read(), self.timeout)
            if rid != HELLO_ID or rtype != HELLO | REPLY:
                raise _refused(rtype, body)
            _, server, requests = _hello_reply(body)
            if not _has(requests, WATCH):
                raise _unsupported(WATCH, server)
            self._writer.write(_frame(WATCH, WATCH_ID, self._query))
        except asyncio.TimeoutError:
            self._drop()
            raise _timed_out(self.timeout) from None
        except BaseException:
            self._drop()
            raise

    async def _read(self):
        if self._reader is None:
            raise _Lost("the watch's connection was closed", 1)
        try:
            header = await self._reader.readexactly(4)
            data = await self._reader.readexactly(_frame_length(header))
        except asyncio.IncompleteReadError:
            raise _lost(None) from None
        except OSError as e:
            raise _lost(e) from None
        return _split_frame(data)

    async def _event(self):
        rtype, rid, body = await self._read()
        if rid == WATCH_ID and rtype == WATCH | REPLY:
            return _watch_event(body)
        if rid in (WATCH_ID, HELLO_ID) and rtype == ERROR:
            e = _error(body)
            if e.status in (UNAVAILABLE, BUSY):
                # The daemon is stopping, or dropped a watcher that fell
                # behind: watch again.
                raise _Lost(str(e), e.status)
            raise e
        raise BatchtokError("batchtokd answered out of step", 1)

    async def _resubscribe(self):
        """As batchtok.Watch's: None once subscribed, a WatchError after
        timeout seconds without success (the next step goes on trying)."""
        if self._wake is None:
            self._wake = asyncio.Event()
        start, last = time.monotonic(), self._lost
        while True:
            wait = self._delay
            if self.timeout is not None:
                left = start + self.timeout - time.monotonic()
                if left <= 0:
                    return _gave_up(self.socket_path, self.timeout, last)
                wait = min(wait, left)
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
                raise StopAsyncIteration  # closed
            except asyncio.TimeoutError:
                pass
            self._delay = min(self._delay * 2, BACKOFF_MAX)
            try:
                await self._subscribe()
                self._resubscribed = True
                self._lost = None
                return None
            except (_Lost, BatchtokError) as e:
                if not _retry_subscribe(e):
                    raise
                last = e

    async def __anext__(self):
        if self._closed or self._ended:
            raise StopAsyncIteration
        await self.subscribe()
        try:
            while True:
                if self._lost is not None:
                    err = await self._resubscribe()
                    if err is not None:
                        return err
                    continue
                try:
                    ev = await self._event()
                except _Lost as e:
                    self._drop()
                    if self._closed:
                        raise StopAsyncIteration
                    self._lost, self._delay = e, BACKOFF_FIRST
                    continue
                if self._closed:
                    # aclose() came while connecting, too early to cut it.
                    raise StopAsyncIteration
                if isinstance(ev, Token):
                    again = self._resubscribed and self.token is not None and \
                        ev.access_token == self.token.access_token
                    self._resubscribed = False
                    if again:
                        continue
                    self.token = ev
                return ev
        except StopAsyncIteration:
            self._ended = True
            self._drop()
            raise
        except BatchtokError:
            self._ended = True
            self._drop()
            raise
        except asyncio.CancelledError:
            # A read cut in the middle of a frame: the next step starts on
            # a new connection.
            self._drop()
            raise


async def _maybe_await(v):
    if inspect.isawaitable(v):
        await v


class Rotation:
    """A watch run by batchtok.aio.Client.on_rotate in a task: .token, .error
    and wait() as batchtok.Rotation's, and await stop()."""

    def __init__(self, watch, callback, on_error=None):
        self.token = None
        self.error = None
        self._watch = watch
        self._callback = callback
        self._on_error = on_error
        self._first = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _report(self, err):
        if self._on_error is not None:
            try:
                await _maybe_await(self._on_error(err))
                return
            except Exception:
                _log.exception("batchtok: on_error raised")
        if isinstance(err, WatchError):
            _log.warning("batchtok: %s", err)
        elif isinstance(err, BatchtokError):
            _log.error("batchtok: the watch ended: %s", err)
        else:
            _log.error("batchtok: the on_rotate callback raised", exc_info=err)

    async def _run(self):
        try:
            async for ev in self._watch:
                if isinstance(ev, WatchError):
                    await self._report(ev)
                    continue
                self.token = ev
                try:
                    await _maybe_await(self._callback(ev))
                except Exception as e:
                    await self._report(e)
                self._first.set()
        except BatchtokError as e:
            self.error = e
            await self._report(e)
        except Exception as e:
            self.error = e
            _log.exception("batchtok: the watch failed")
        finally:
            await self._watch.aclose()
            self._first.set()

    @property
    def running(self):
        return not self._task.done()

    async def wait(self, timeout=None):
        try:
            await asyncio.wait_for(self._first.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        if self.token is not None:
            return self.token
        if self.error is not None:
            raise self.error
        raise _timed_out(timeout or 0)

    async def stop(self, timeout=5.0):
        """Ends the watch and waits for its task (at most timeout seconds,
        then cancels it: a callback still running). Returns whether it
        ended by itself."""
        await self._watch.aclose()
        if self._task is asyncio.current_task():
            return False
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
            return True
        except asyncio.TimeoutError:
            self._task.cancel()
            return False


class BatchtokCredential:
    """An azure.core AsyncTokenCredential backed by batchtokd, for the
    asynchronous Azure SDK clients (AsyncPipelineClient with
    AsyncBearerTokenCredentialPolicy): the daemon caches and refreshes, so
    every call is one round trip on a local socket. Close it (or use it with
    async with) to close its connection.

    claims and on_rotate as for batchtok.BatchtokCredential, the watch in a
    task (on_rotate may be a coroutine function): it starts with async with
    when resource= is given, else with the first get_token() call."""

    def __init__(self, identity=None, socket_path=None, client=None, timeout=60.0,
                 on_rotate=None, resource=None, on_error=None):
        self.identity = identity
        self._client = client or Client(socket_path, timeout)
        self._access_token = _access_token_type()
        self._on_rotate, self._on_error = on_rotate, on_error
        self._resource = resource
        self._starting = None
        self.rotation = None

    async def _rotate(self, what):
        # One task starts it; the others that come meanwhile wait for it.
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._client.on_rotate(
                self._on_rotate, self.identity, on_error=self._on_error,
                resource=what.get("resource"), scope=what.get("scope")))
        starting = self._starting
        try:
            self.rotation = await asyncio.shield(starting)
        except BaseException:
            if self._starting is starting and starting.done():
                self._starting = None  # failed: the next call tries again
            raise

    async def get_token(self, *scopes, claims=None, tenant_id=None, **kwargs):
        what = _scope(scopes)
        if self._on_rotate is not None and self.rotation is None:
            await self._rotate({"resource": self._resource} if self._resource else what)
        t = None
        if claims:
            try:
                t = await self._client.get_token(self.identity, claims=claims, **what)
            except BatchtokError as e:
                if e.status != UNSUPPORTED:
                    raise
        if t is None:
            t = await self._client.get_token(self.identity, force_refresh=bool(claims), **what)
        return self._access_token(t.access_token, int(t.expires_on))

    async def close(self):
        if self.rotation is not None:
            await self.rotation.stop()
        await self._client.close()

    async def __aenter__(self):
        if self._on_rotate is not None and self._resource and self.rotation is None:
            await self._rotate({"resource": self._resource})
        return self

    async def __aexit__(self, *exc):
        await self.close()

"""A loopback TCP proxy a test can partition: the network between a process and its server.

Put it between a worker (or the API) and RabbitMQ or PostgreSQL, and the server "goes away" for
that process only, without touching the server other test runs share. Two kinds of partition:

- :meth:`TcpProxy.cut` (reset): every open connection is shut down and new ones are closed at
  once, as when a server restarts or a firewall rejects.
- :meth:`TcpProxy.black_hole`: nothing is forwarded, in either direction, and nothing is closed:
  no FIN, no RST, new connections are accepted and then hear nothing. This is what the two
  ends of a real partition see. Bytes sent meanwhile wait (in the proxy or in the kernel's
  buffers) and arrive once the partition heals, as TCP's retransmissions would deliver them; a
  close during the partition reaches the other end after the heal too.

A userspace proxy cannot withhold TCP acknowledgements: the kernel acknowledges every byte the
proxy's socket receives. So TCP keepalive probes and ``tcp_user_timeout`` never fire across it;
only a protocol's own heartbeat or an application deadline notices the black hole. A real
partition is detected sooner (by those TCP timers as well), never later.

Every connection goes to 127.0.0.1 only; every wait is bounded, so a stuck test cannot hang.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

HOST = "127.0.0.1"

# How often a held connection looks again whether the partition healed or the proxy closed.
POLL_S = 0.1


class TcpProxy:
    """A TCP forwarder to ``target`` on a free loopback port (``self.port``)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server((HOST, 0))
        self.port: int = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.refusing = False
        self.closed = False
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    # -- control -------------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset: drop every open connection and refuse new ones until :meth:`restore`."""
        self.refusing = True
        self.flowing.set()  # held pumps wake up, see ``refusing`` and close their sockets
        with self.lock:
            live = list(self.sockets)
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def black_hole(self) -> None:
        """Forward nothing and close nothing until :meth:`restore`."""
        self.flowing.clear()

    def restore(self) -> None:
        """Heal: forward again (held bytes first) and accept new connections."""
        self.refusing = False
        self.flowing.set()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()

    # -- forwarding ----------------------------------------------------------------------------

    def _hold(self) -> bool:
        """Wait while the partition is a black hole; False when the connection must close."""
        while not self.flowing.wait(POLL_S):
            if self.closed:
                return False
        return not (self.refusing or self.closed)

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.refusing:
                _reset(client)
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        # Accepted by the kernel, but in a black hole the server never hears of it.
        if not self._hold():
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self.lock:
            self.sockets.update((client, upstream))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while self._hold():
                data = source.recv(65536)
                # A black hole that began while recv() waited: this chunk waits with the rest.
                if not self._hold() or not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self.lock:
                self.sockets.difference_update((source, sink))


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a refused or reset connection is."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()

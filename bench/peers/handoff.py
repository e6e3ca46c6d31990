"""The bare fd-handoff sketch: `python bench/peers/handoff.py PORT`.

A reference for the bench, not a server: rawsse's design with nothing else. It accepts on
the raw listening socket itself, reads a request head, answers a stream request with a
fixed head and keeps the fd in one epoll, and fans each published event out with one
os.write per subscriber (keeping the unsent rest of a blocked one). No limits, no
history, no resume, no timeouts, no validation beyond what the flooder sends: what is
left is the cost of the design itself, on uvloop, in Python.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import sys
from urllib.parse import parse_qsl, urlsplit

import uvloop

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Connection: close\r\n\r\nretry: 3000\n"
)
READING, STREAMING = 0, 1
GONE = select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP


class Sketch:
    def __init__(self, port: int) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.epoll = select.epoll()
        self.kind: dict[int, int] = {}
        self.unparsed: dict[int, bytes] = {}
        self.unsent: dict[int, bytes] = {}
        self.topics: dict[str, dict[int, None]] = {}
        self.topic_of: dict[int, str] = {}
        self.sequence = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.listener.fileno(), self.accept)
        loop.add_reader(self.epoll.fileno(), self.ready)

    def accept(self) -> None:
        for _ in range(64):
            try:
                fd, _ = self.listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            os.set_blocking(fd, False)
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
            self.kind[fd] = READING

    def ready(self) -> None:
        for fd, mask in self.epoll.poll(0, 1024):
            if fd not in self.kind:
                continue
            if mask & GONE:
                self.drop(fd)
                continue
            if mask & select.EPOLLOUT:
                self.flush(fd)
            if mask & select.EPOLLIN:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.drop(fd)
                elif self.kind[fd] == READING:
                    self.requests(fd, self.unparsed.pop(fd, b"") + data)

    def requests(self, fd: int, buffer: bytes) -> None:
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.unparsed[fd] = buffer
                return
            head = buffer[:end].decode("latin-1")
            method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
            url = urlsplit(target)
            query = dict(parse_qsl(url.query))
            if method == "GET":
                self.subscribe(fd, query.get("topic", ""))
                return
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = buffer[end + 4 : end + 4 + length]
            if len(body) < length:
                self.unparsed[fd] = buffer
                return
            buffer = buffer[end + 4 + length :]
            fields = query if "topic" in query else dict(parse_qsl(body.decode()))
            data = fields.get("data", body.decode())
            event_id = self.publish(fields.get("topic", ""), data.encode())
            answer = b'{"id": "sketch-%d"}' % event_id
            os.write(fd, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))

    def subscribe(self, fd: int, topic: str) -> None:
        self.kind[fd] = STREAMING
        self.topics.setdefault(topic, {})[fd] = None
        self.topic_of[fd] = topic
        self.send(fd, STREAM_HEAD)

    def publish(self, topic: str, data: bytes) -> int:
        self.sequence += 1
        wire = b"id: sketch-%d\ndata: %s\n\n" % (self.sequence, data)
        for fd in list(self.topics.get(topic, ())):
            self.send(fd, wire)
        return self.sequence

    def send(self, fd: int, data: bytes) -> None:
        if fd in self.unsent:
            self.unsent[fd] += data
        elif self.write(fd, data):
            self.epoll.modify(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLOUT)

    def flush(self, fd: int) -> None:
        if not self.write(fd, self.unsent.pop(fd, b"")) and fd in self.kind:
            self.epoll.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)

    def write(self, fd: int, data: bytes) -> bool:
        """Write what the socket takes; True when a rest is left in `unsent`."""
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.drop(fd)
            return False
        if sent < len(data):
            self.unsent[fd] = data[sent:]
            return True
        return False

    def drop(self, fd: int) -> None:
        self.kind.pop(fd, None)
        self.unparsed.pop(fd, None)
        self.unsent.pop(fd, None)
        topic = self.topic_of.pop(fd, None)
        if topic is not None:
            del self.topics[topic][fd]
        try:
            self.epoll.unregister(fd)
        except OSError:
            pass
        os.close(fd)


async def main(port: int) -> None:
    Sketch(port).start(asyncio.get_running_loop())
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))

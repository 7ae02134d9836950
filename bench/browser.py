"""A minimal HTTP/1.1 client for the sign-in driver: one keep-alive connection and a cookie jar per virtual
user, nothing else. A general client (httpx) spent about as much CPU per request as the server's cheaper
endpoints, on the same two cores; this one spends a small fraction of that, so that the driver takes little
from the server it measures. Loopback and the IdP's own answers only: no TLS, no proxies, no redirects."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlencode


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-case names; Set-Cookie is applied to the jar, not kept here."""
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Browser:
    host: str
    port: int
    forwarded_for: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None

    async def get(self, target: str, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("GET", target, headers=headers)

    async def post(self, target: str, form: dict[str, str], headers: dict[str, str] | None = None) -> Answer:
        return await self.request("POST", target, body=urlencode(form).encode(),
                                  headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})

    async def request(self, method: str, target: str, *, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> Answer:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{name}={value}" for name, value in self.cookies.items()))
        if self.forwarded_for:
            lines.append(f"X-Forwarded-For: {self.forwarded_for}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        for attempt in range(2):
            reused = self._writer is not None
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None and self._writer is not None
            try:
                self._writer.write(data)
                return await self._read(self._reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if not reused or attempt:
                    raise  # a fresh connection failed: not a keep-alive connection the server had closed
        raise AssertionError("unreachable")

    async def _read(self, reader: asyncio.StreamReader) -> Answer:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            if not line:
                continue
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie":
                self._set_cookie(value)
            else:
                headers[name] = value
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunks.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(chunk[:-2] for chunk in chunks)
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, headers, body)

    def _set_cookie(self, value: str) -> None:
        pair, *attributes = value.split(";")
        name, _, content = pair.strip().partition("=")
        expired = any(a.strip().lower() in ("max-age=0",) or a.strip().lower().startswith("max-age=-")
                      for a in attributes)
        if expired or content in ("", '""'):
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = content

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except ConnectionError:
                pass
        self._reader = self._writer = None

#!/usr/bin/env python3
"""Drives the page of `waveflow serve` in headless Chromium as a person would:
chooses a file in the page's file input, waits for the result, screenshots.

Talks the Chrome DevTools Protocol over a WebSocket with the standard library
only (no pip packages). Used by scripts/serve-screenshot.sh:

    serve-page-driver.py DEVTOOLS_PORT PAGE_URL FILE OUT.png [WIDTH HEIGHT]
"""
import base64, json, os, socket, struct, sys, time, urllib.request


class WebSocket:
    """A minimal RFC 6455 client: text frames, masking, fragmentation."""

    def __init__(self, url):
        assert url.startswith("ws://")
        host_port, _, path = url[5:].partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port or 80)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError("websocket handshake failed: " + head.decode(errors="replace"))

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise RuntimeError("websocket closed")
            data += chunk
        return data

    def send(self, text):
        payload = text.encode()
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            data = self._read(n)
            opcode = b0 & 0x0F
            if opcode in (0x1, 0x0):
                message += data
                if b0 & 0x80:
                    return message.decode()
            elif opcode == 0x8:
                raise RuntimeError("websocket closed by the browser")


class Page:
    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def eval(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


def main():
    port, url, file, out = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3]), sys.argv[4]
    width, height = (int(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 6 else (1000, 600)
    deadline = time.time() + 30
    while True:
        try:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                break
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit("serve-page-driver: no browser page on the DevTools port")
        time.sleep(0.2)
    page = Page(WebSocket(pages[0]["webSocketDebuggerUrl"]))
    page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    page.call("Page.navigate", url=url)
    for _ in range(200):
        if page.eval("document.readyState") == "complete" and page.eval("document.getElementById('model').textContent.includes('parameters')"):
            break
        time.sleep(0.1)
    page.call("DOM.enable")
    root = page.call("DOM.getDocument")["root"]["nodeId"]
    node = page.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    page.call("DOM.setFileInputFiles", nodeId=node, files=[file])  # as if the person chose the file
    done = "document.getElementById('ri').complete && document.getElementById('ri').naturalWidth > 0"
    for _ in range(1200):
        status = page.eval("document.getElementById('status').textContent")
        if page.eval(done) or page.eval("document.getElementById('status').className") == "err":
            break
        time.sleep(0.1)
    print("serve-page-driver: page says:", status)
    png = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    with open(out, "wb") as f:
        f.write(png)
    if not page.eval(done):
        sys.exit("serve-page-driver: the page showed no result")


if __name__ == "__main__":
    main()

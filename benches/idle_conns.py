#!/usr/bin/env python3
"""Opens N keep-alive connections to a loopback HTTP server, sends one
request on each, keeps them idle, and prints the server's RSS before and
after (reading /proc/PID/status). Loopback only; stops by itself.

    idle_conns.py PORT PID N [h1|h2c|tls|tls-h2]

h1: HTTP/1.1 over TCP; h2c: HTTP/2 with prior knowledge (one GET on stream
1); tls: HTTP/1.1 over TLS (ALPN http/1.1, certificate not checked);
tls-h2: HTTP/2 over TLS (ALPN h2), as phones connect. NOREQ=1 in the
environment: connect (and shake hands) only, no request."""
import os, resource, socket, ssl, sys, time

NOREQ = os.environ.get("NOREQ") == "1"

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

H1 = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

def frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload

# Preface, empty SETTINGS, then HEADERS (END_STREAM | END_HEADERS) on stream 1:
# :method GET, :path /, :scheme http (static table), :authority "bench".
H2C = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
       + frame(1, 5, 1, bytes([0x82, 0x84, 0x86, 0x41, 5]) + b"bench"))

def read_answer(s, proto):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return
        data += chunk
        if proto in ("h2c", "tls-h2"):
            # Until a frame on stream 1 ends the stream (DATA or HEADERS).
            i = 0
            while i + 9 <= len(data):
                n = int.from_bytes(data[i:i + 3], "big")
                kind, flags = data[i + 3], data[i + 4]
                sid = int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF
                if i + 9 + n > len(data):
                    break
                if sid == 1 and kind in (0, 1) and flags & 1:
                    return
                i += 9 + n
        elif b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    if len(body) >= int(line.split(b":")[1]):
                        return
                    break
            else:
                return

def main():
    host, port, pid, n = "127.0.0.1", int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    proto = sys.argv[4] if len(sys.argv) > 4 else "h1"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = None
    if proto in ("tls", "tls-h2"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2" if proto == "tls-h2" else "http/1.1"])
    before = rss_kib(pid)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        if ctx:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        if not NOREQ:
            s.sendall(H2C if proto in ("h2c", "tls-h2") else H1)
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        if not NOREQ:
            read_answer(s, proto)
    time.sleep(2)
    after = rss_kib(pid)
    print(f"proto={proto} connections={n} rss_before_kib={before} rss_after_kib={after} "
          f"per_connection_bytes={(after - before) * 1024 // max(n, 1)}")
    for s in socks:
        s.close()

if __name__ == "__main__":
    main()

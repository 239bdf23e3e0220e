#!/usr/bin/env python3
"""Opens N keep-alive connections to a loopback HTTP server, sends one
request on each, keeps them idle, and prints the server's RSS before and
after (reading /proc/PID/status). Loopback only; stops by itself."""
import resource, socket, sys, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def main():
    host, port, pid, n = "127.0.0.1", int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kib(pid)
    socks = []
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.sendall(req)
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        s.recv(65536)
    time.sleep(2)
    after = rss_kib(pid)
    print(f"connections={n} rss_before_kib={before} rss_after_kib={after} "
          f"per_connection_bytes={(after - before) * 1024 // max(n, 1)}")
    for s in socks:
        s.close()

if __name__ == "__main__":
    main()

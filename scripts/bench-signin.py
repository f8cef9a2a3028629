#!/usr/bin/env python3
"""A cached page's latency while idle and during a burst of sign-in attempts.

    scripts/bench-signin.py --base http://127.0.0.1:8000 --page /properties/1/ \
        [--attempts 100] [--from many|one] [--idle-seconds 5]

Against a running server (release build, TRUSTED_PROXIES=127.0.0.1/32 so that
X-Forwarded-For picks the client address). One keep-alive client GETs the page in a
loop; its p50/p90/p99 are taken over a quiet period, then over the time it takes to
answer N simultaneous POST /admin/login with random user names, from N addresses
(--from many: each attempt is evaluated, so each costs a password hash) or from one
(--from one: the per-address limit refuses most before any hashing). The page is
requested at a fixed rate (--rate, default 500/s) and each latency counted from when
the request was due. Prints the figures and the statuses of the burst. Standard
library only; run by hand.
"""

import argparse
import http.client
import multiprocessing
import re
import secrets
import statistics
import threading
import time
import urllib.parse


def connect(base):
    url = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)


def sign_in_form(base):
    """A session cookie and its CSRF token from the sign-in page."""
    conn = connect(base)
    conn.request("GET", "/admin/login")
    res = conn.getresponse()
    body = res.read().decode()
    cookie = res.getheader("Set-Cookie").split(";")[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)
    return cookie, token


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def sample_page(base, page, rate, keep_going, out):
    """GETs `page` at a fixed rate on one keep-alive connection while `keep_going()`,
    each latency counted from when the request was due, not from when it was sent: a
    stall delays every request due during it, as it would delay visitors (no
    coordinated omission)."""
    conn = connect(base)
    interval = 1 / rate
    started = time.perf_counter()
    i = 0
    while keep_going():
        due = started + i * interval
        i += 1
        ahead = due - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        conn.request("GET", page)
        res = conn.getresponse()
        res.read()
        hit = res.getheader("X-Cache") in ("HIT", "STALE")
        # A miss or a bypass is no cached page: counted as slower than any.
        out.append((time.perf_counter() - due) * 1e3 if hit else float("inf"))


def attempt(base, cookie, token, client, statuses, lock):
    conn = connect(base)
    body = urllib.parse.urlencode(
        {"username": "guess-" + secrets.token_hex(6), "password": "wrong", "csrf_token": token}
    )
    headers = {
        "Cookie": cookie,
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Forwarded-For": client,
    }
    conn.request("POST", "/admin/login", body, headers)
    res = conn.getresponse()
    res.read()
    with lock:
        statuses[res.status] = statuses.get(res.status, 0) + 1


def burst(base, cookie, token, clients, results):
    """The simultaneous sign-ins, in their own process so that their threads do not
    slow the sampling client down."""
    statuses, lock = {}, threading.Lock()
    threads = [
        threading.Thread(target=attempt, args=(base, cookie, token, c, statuses, lock))
        for c in clients
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((time.perf_counter() - started, statuses))


def summary(name, ms):
    return (
        f"{name}: {len(ms)} requests, p50 {statistics.median(ms):.3f} ms, "
        f"p90 {percentile(ms, 0.9):.3f} ms, p99 {percentile(ms, 0.99):.3f} ms"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:8000")
    ap.add_argument("--page", default="/properties/1/")
    ap.add_argument("--attempts", type=int, default=100)
    ap.add_argument("--from", dest="source", choices=["many", "one"], default="many")
    ap.add_argument("--idle-seconds", type=float, default=5)
    ap.add_argument("--rate", type=float, default=500, help="page GETs per second")
    args = ap.parse_args()

    cookie, token = sign_in_form(args.base)

    idle = []
    idle_until = time.perf_counter() + args.idle_seconds
    sample_page(args.base, args.page, args.rate, lambda: time.perf_counter() < idle_until, idle)

    # A fresh 10.x.y.0/24 per run, so earlier runs' counters do not refuse this one.
    net = secrets.randbelow(250) + 1, secrets.randbelow(250) + 1
    clients = [
        f"10.{net[0]}.{net[1]}.{i % 250 + 1}" if args.source == "many" else f"10.{net[0]}.{net[1]}.1"
        for i in range(args.attempts)
    ]
    results = multiprocessing.Queue()
    attempts = multiprocessing.Process(
        target=burst, args=(args.base, cookie, token, clients, results)
    )
    busy = []
    attempts.start()
    sample_page(
        args.base,
        args.page,
        args.rate,
        lambda: attempts.is_alive() and results.empty(),
        busy,
    )
    burst_seconds, statuses = results.get()
    attempts.join()

    print(summary("idle", idle))
    print(summary(f"during {args.attempts} sign-ins from {args.source} address(es)", busy))
    print(f"burst took {burst_seconds:.2f} s; statuses {dict(sorted(statuses.items()))}")
    print(f"p50 during / idle: {statistics.median(busy) / statistics.median(idle):.2f}")


if __name__ == "__main__":
    main()

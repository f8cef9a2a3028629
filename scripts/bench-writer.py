#!/usr/bin/env python3
"""The admin of `scripts/bench --mixed`: signs in and edits (or inserts) listings through
the admin forms at a fixed rate, paced on the clock, over one keep-alive connection — as
a browser would, and without a process per request (on a 2-core machine a `curl` per
write cost ~10 ms of CPU, taken from the server under test).

    bench-writer.py BASE_URL USER PASSWORD KIND RATE SECONDS FORMS

KIND is `edit` (the price of a random listing of FORMS, lines "id<TAB>dollars<TAB>form
body", its other fields unchanged) or `insert`. Prints how many writes the server
accepted (303).
"""

import http.client
import random
import re
import sys
import time
import urllib.parse

CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


class Browser:
    def __init__(self, base):
        url = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port)
        self.cookies = {}

    def request(self, method, path, form=None):
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = form if isinstance(form, str) else urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, text

    def csrf(self, path):
        _, text = self.request("GET", path)
        match = CSRF.search(text)
        if not match:
            sys.exit(f"no CSRF token on {path}")
        return match.group(1)


def main():
    base, user, password, kind, rate, seconds, forms = sys.argv[1:8]
    rate, seconds = int(rate), int(seconds)
    rows = []
    with open(forms) as f:
        for line in f:
            id_, dollars, body = line.rstrip("\n").split("\t", 2)
            rows.append((id_, int(dollars), body))

    browser = Browser(base)
    token = browser.csrf("/admin/login")
    browser.request(
        "POST", "/admin/login", {"username": user, "password": password, "csrf_token": token}
    )
    token = browser.csrf("/admin/")

    accepted = 0
    start = time.monotonic()
    for k in range(rate * seconds):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if kind == "edit":
            id_, dollars, body = random.choice(rows)
            price = (dollars * random.randint(90, 110) // 100 // 500 + 1) * 500
            form = body + "&" + urllib.parse.urlencode({"price": f"{price}.00", "csrf_token": token})
            status, _ = browser.request("POST", f"/admin/properties/{id_}/edit", form)
        else:
            status, _ = browser.request(
                "POST",
                "/admin/properties/new",
                {
                    "title": f"Bench insert {k}",
                    "description": "Inserted by scripts/bench --mixed, one a second.",
                    "price": f"{200000 + random.randrange(327680)}.00",
                    "location": "Bench City",
                    "csrf_token": token,
                },
            )
        accepted += status == 303
    print(accepted)


if __name__ == "__main__":
    main()

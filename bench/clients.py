"""The two reference clients the exporter is measured beside, each run as its own process.

* ``passthrough``: pulls the same ThreatQ pages the exporter pulls (same
  query, page size and ``with=`` blocks, decoded as JSON), then posts
  pre-built bundles of the same judgements, one request at a time. No
  normalisation, no mapping, no validation, no state: the floor of what a
  serial client can do against the same two servers.
* ``naive``: pulls the same pages, then posts one judgement per request
  (``POST /ctia/judgement``), the way a first script would. It posts the
  first ``--limit`` judgements only and reports how long those took, so the
  benchmark can project the whole set without spending 20 minutes on it.

Both print one JSON line with what they did and how long each part took.

Usage (the benchmark calls these; by hand only for trying)::

    python bench/clients.py passthrough --tq URL --ctia URL --bundles bundles.jsonl
    python bench/clients.py naive --tq URL --ctia URL --bundles bundles.jsonl --limit 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Iterator

import requests

#: what the exporter asks ThreatQ for (exportkit.threatq.paging.DEFAULT_FIELDS, sorted by its window field)
FIELDS = ["*", "attributes", "sources", "tags"]
SORT = "touched_at"
TQ_USER = ("analyst@example.com", "emulator-password", "exportkit-emulator")
CTIA_CLIENT = ("client-emulator", "emulator-password")
#: the exporter's external-key-prefixes (exportkit_ctia.xids.lookup_prefixes): version XIDs only. The
#: shared "exportkit-" would match every judgement's instance XID, and CTIA would answer "exists" for all
#: but the first judgement instead of creating them.
LOOKUP_PREFIXES = "exportkit-judgement-,exportkit-relationship-,exportkit-indicator-"


def tq_session(url: str) -> requests.Session:
    session = requests.Session()
    email, password, client_id = TQ_USER
    token = session.post(f"{url}/api/token", params={"grant_type": "password", "client_id": client_id},
                         json={"email": email, "password": password}, timeout=60).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def tq_pages(url: str, collection: str, page_size: int) -> Iterator[list[dict[str, Any]]]:
    """The collection's pages, by offset, sorted as the exporter sorts, each decoded from JSON.

    ThreatQ may serve fewer than ``limit`` per page (a page cap): paging ends at an
    empty page or at ``total``, as the exporter's does.
    """
    session = tq_session(url)
    searches = session.get(f"{url}/api/search/query", params={"limit": 200, "offset": 0}, timeout=60).json()["data"]
    entry = next(e for e in searches if e["name"] == collection)
    saved = json.loads(entry["json"]) if isinstance(entry["json"], str) else entry["json"]
    query = {**saved["api_query"], "fields": FIELDS}
    offset = 0
    while True:
        body = session.post(f"{url}/api/indicators/query", params={"limit": page_size, "offset": offset, "sort": SORT},
                            json=query, timeout=60).json()
        page = body["data"]
        if not page:
            return
        yield page
        offset += len(page)
        if offset >= body.get("total", 0):
            return


def ctia_session(url: str) -> requests.Session:
    session = requests.Session()
    token = session.post(f"{url}/iroh/oauth2/token", auth=CTIA_CLIENT, data={"grant_type": "client_credentials"}, timeout=60).json()
    session.headers["Authorization"] = f"Bearer {token['access_token']}"
    session.headers["Content-Type"] = "application/json"
    return session


def pull(args: argparse.Namespace) -> dict[str, Any]:
    """Read every page of the collection (both clients start so); counts and seconds."""
    started = time.perf_counter()
    indicators = pages = 0
    for page in tq_pages(args.tq, args.collection, args.page_size):
        pages += 1
        indicators += len(page)
    return {"pages": pages, "indicators": indicators, "pull_seconds": time.perf_counter() - started}


def passthrough(args: argparse.Namespace) -> dict[str, Any]:
    pulled_what = pull(args)
    pulled = time.perf_counter()
    session = ctia_session(args.ctia)
    bundles = judgements = created = 0
    with open(args.bundles, "rb") as fh:
        for line in fh:  # one pre-built bundle per line, posted as it is
            answer = session.post(f"{args.ctia}/ctia/bundle/import", params={"external-key-prefixes": LOOKUP_PREFIXES}, data=line, timeout=600)
            answer.raise_for_status()
            bundles += 1
            results = answer.json()["results"]
            judgements += len(results)
            created += sum(1 for r in results if r.get("result") == "created")
    return {**pulled_what, "bundles": bundles, "judgements": judgements, "created": created,
            "post_seconds": time.perf_counter() - pulled}


def naive(args: argparse.Namespace) -> dict[str, Any]:
    pulled_what = pull(args)
    pulled = time.perf_counter()
    session = ctia_session(args.ctia)
    posted = 0
    with open(args.bundles, "rb") as fh:
        for line in fh:
            for body in json.loads(line)["judgements"]:
                if posted >= args.limit:
                    break
                body = {k: v for k, v in body.items() if k != "id"}
                session.post(f"{args.ctia}/ctia/judgement", json=body, timeout=60).raise_for_status()
                posted += 1
    return {**pulled_what, "judgements": posted, "post_seconds": time.perf_counter() - pulled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("client", choices=("passthrough", "naive"))
    parser.add_argument("--tq", required=True)
    parser.add_argument("--ctia", required=True)
    parser.add_argument("--bundles", required=True, help="JSON lines, one bundle body per line")
    parser.add_argument("--collection", default="All Indicators")
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--limit", type=int, default=2000, help="naive: judgements to post")
    args = parser.parse_args()
    result = passthrough(args) if args.client == "passthrough" else naive(args)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()

"""``emulate_threatq``: run the ThreatQ emulator from the command line (``exportkit emulate threatq``).

It prints the base URL alone on the first line as soon as it listens (so a
script can read it), then the credentials on stderr, and serves until
interrupted. It behaves like the real service by default (a silent page
cap, ``fields`` required for attributes and sources, child-row changes that
move only ``touched_at``); ``--lenient`` turns those off.
"""

from __future__ import annotations

import sys

import click

from exportkit.threatq.emulator import REALISTIC, Credentials, ThreatQEmulator

__all__ = ["emulate_threatq"]

_DEFAULTS = Credentials()


@click.command("threatq", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--port", type=int, default=0, show_default=True, help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--indicators", type=click.IntRange(min=0), default=2000, show_default=True, help="Indicators to generate.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the generated data set.")
@click.option("--username", default=_DEFAULTS.username, show_default=True, help="Accepted user e-mail.")
@click.option("--password", default=_DEFAULTS.password, help="Accepted password.")
@click.option("--client-id", default=_DEFAULTS.client_id, show_default=True, help="Accepted OAuth client id.")
@click.option("--client-secret", default=_DEFAULTS.client_secret, help="Accepted OAuth client secret (client_credentials).")
@click.option("--token-lifetime", type=click.FloatRange(min=0.1), default=3600.0, show_default=True, help="Token lifetime in seconds.")
@click.option("--lenient", is_flag=True, help="Turn off the real service's behaviours (page cap, fields required, touched_at-only child changes).")
@click.option("--page-cap", type=click.IntRange(min=0), default=None,
              help=f"Most indicators per query page, echoed as limit (default {REALISTIC['page_cap']}; 0: none).")
@click.option("--timezone", "tz_name", default="UTC", show_default=True, help="The appliance's time zone (IANA name).")
@click.option("--clock-offset", type=float, default=0.0, show_default=True, help="Seconds the appliance's clock runs ahead (negative: behind).")
@click.option("--sources-without-tlp", is_flag=True, help="Serve sources without tlp_id/tlp_name.")
@click.option("--search-ignores-paging", is_flag=True, help="GET /api/search/query ignores limit/offset and sends no total.")
@click.option("--latency", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds added before every answer (to emulate a WAN).")
def emulate_threatq(port: int, indicators: int, seed: int, username: str, password: str, client_id: str,
                    client_secret: str, token_lifetime: float, lenient: bool, page_cap: int | None, tz_name: str,
                    clock_offset: float, sources_without_tlp: bool, search_ignores_paging: bool, latency: float) -> None:
    """Serve a fake ThreatQ with a seeded data set on 127.0.0.1.

    \b
    Example:
        exportkit emulate threatq --indicators 50000 --seed 7 --port 8443
    """
    creds = Credentials(username=username, password=password, client_id=client_id, client_secret=client_secret)
    try:
        emulator = ThreatQEmulator(indicators=indicators, seed=seed, credentials=creds, token_lifetime=token_lifetime, port=port,
                                   realistic=not lenient, timezone=tz_name, clock_offset=clock_offset,
                                   sources_without_tlp=sources_without_tlp, search_paging=not search_ignores_paging, latency=latency)
        if page_cap is not None:
            emulator.configure(page_cap=page_cap or None)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(emulator.url)
    sys.stdout.flush()
    click.echo(
        f"ThreatQ emulator: {indicators} indicators (seed {seed}); user {username}, client id {client_id}; "
        f"collections: {', '.join(e['name'] for e in emulator.search_entries())}; control API under {emulator.url}/_control/ "
        f"with the header 'X-Emulator-Token: {emulator.control_token}'; behaviour: {emulator.configure()}",
        err=True,
    )
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass

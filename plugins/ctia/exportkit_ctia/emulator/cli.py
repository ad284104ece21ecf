"""``exportkit emulate ctia``: run the CTIA emulator in the foreground.

The first line on standard output is the base URL and nothing else (flushed
once the server listens), so scripts can read it and point ``api_url`` at it
and ``token_url`` at ``<url>/iroh/oauth2/token``.
"""

from __future__ import annotations

import sys

import click

from exportkit_ctia.emulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, CtiaEmulator
from exportkit_ctia.emulator.app import TLP_ORDER

__all__ = ["emulate_ctia"]


@click.command("ctia")
@click.option("--port", type=int, default=0, show_default=True, help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--client-id", default=DEFAULT_CLIENT_ID, show_default=True, envvar="CTIA_EMULATOR_CLIENT_ID", help="API client id to accept.")
@click.option(
    "--client-secret",
    default=DEFAULT_CLIENT_SECRET,
    envvar="CTIA_EMULATOR_CLIENT_SECRET",
    help="API client password to accept (or the CTIA_EMULATOR_CLIENT_SECRET variable).",
)
@click.option("--min-tlp", type=click.Choice(TLP_ORDER), default="green", show_default=True, help="Lowest TLP accepted.")
@click.option("--max-entities", type=click.IntRange(min=1), default=2000, show_default=True, help="Most entities per bundle/bulk request.")
@click.option("--token-lifetime", type=click.FloatRange(min=1), default=600, show_default=True, help="Seconds each token lives.")
@click.option(
    "--org-rate-limit",
    type=click.IntRange(min=0),
    default=8000,
    show_default=True,
    help="API requests the organisation may make per rolling --rate-window (429 with Retry-After beyond); 0: no limit.",
)
@click.option("--rate-window", type=click.FloatRange(min=1), default=3600, show_default=True, help="Seconds of the rate limit's rolling window.")
@click.option("--latency", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds added before every answer (to emulate a WAN).")
@click.option(
    "--red-org-readable",
    is_flag=True,
    help="Let every client of the organisation read TLP red judgements (CTIA lets only their owner and the authorized users and groups).",
)
def emulate_ctia(
    port: int,
    client_id: str,
    client_secret: str,
    min_tlp: str,
    max_entities: int,
    token_lifetime: float,
    org_rate_limit: int,
    rate_window: float,
    red_org_readable: bool,
    latency: float,
) -> None:
    """Run a loopback CTIA emulator (token endpoint, bundles, judgements, feeds) until interrupted.

    Like Cisco's private intel, it limits the organisation to 8000 requests an
    hour and lets only their owner read TLP red judgements.
    """
    emulator = CtiaEmulator(
        port=port,
        client_id=client_id,
        client_secret=client_secret,
        min_tlp=min_tlp,
        max_entities=max_entities,
        token_lifetime=token_lifetime,
        org_rate_limit=org_rate_limit or None,
        rate_window=rate_window,
        red_owner_only=not red_org_readable,
        latency=latency,
    )
    click.echo(emulator.url)
    sys.stdout.flush()  # the URL line must reach a reading parent at once
    click.echo(f"token_url {emulator.token_url}  client_id {client_id}", err=True)
    click.echo(f"inspection routes under {emulator.url}/_inspect/ need the header 'X-Emulator-Token: {emulator.control_token}'", err=True)
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass

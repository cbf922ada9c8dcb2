"""``mail-proxy keygen``: a new encryption key, made locally (SPEC §16).

The key comes from ``proxy.crypto.generate_key`` (32 bytes from ``os.urandom``,
as base64): the form ``GMP_ENCRYPTION_KEY`` and ``GMP_ENCRYPTION_KEY_FILE``
accept. Nothing is stored or sent anywhere.
"""

from __future__ import annotations

import click

from proxy.crypto import generate_key


@click.command()
def keygen() -> None:
    """Print a new encryption key (local).

    32 random bytes, base64, for GMP_ENCRYPTION_KEY. To rotate, give the proxy the
    new key and list the old one in GMP_ENCRYPTION_PREVIOUS_KEYS; with several
    instances, roll it out in two steps (see the README, "Deployment").
    """
    click.echo(generate_key())

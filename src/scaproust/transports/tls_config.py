"""The configuration of TLS endpoints (``tls+tcp://``, ``wss://``), without loading ``ssl``.

:class:`TLSConfig` is public (``sp.TLSConfig``) and the ``tls`` socket option accepts it, so
this module loads with ``import scaproust``; ``ssl`` and ``tempfile`` load only inside the
functions that need them, when a TLS endpoint is made (docs/ARCHITECTURE.md, "What loads at
import"). :func:`prepare` turns the option into the :class:`TLSSetup` an endpoint hands its
pipes; the streams and the transport are :mod:`scaproust.transports.tls`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import ssl

__all__ = ["TLSConfig", "TLSSetup", "prepare"]

_MODES = ("client", "server")
_AUTH_MODES = ("none", "optional", "required")


def _files(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class TLSConfig:
    """How one side of a TLS connection authenticates (pynng's ``TLSConfig``, in Python).

    ``mode``: ``"client"`` (connect) or ``"server"`` (bind); None (the default) fits
    either, as it is used. ``server_name``: the name a client checks the server's
    certificate against (default: the URL's host). ``ca_string`` (PEM text) and/or
    ``ca_files``: the certificates trusted to sign the peer's; a client with neither trusts
    the system's. ``own_cert_string`` with ``own_key_string`` (PEM text), or
    ``cert_key_file`` (one PEM file holding both): this side's certificate, which a server
    must have and a client presents when the server asks. ``auth_mode``: ``"none"`` (the
    peer's certificate is not checked), ``"optional"`` (checked if the peer sends one),
    ``"required"``; default: ``"required"`` for a client, ``"none"`` for a server, as in
    nng. ``minimum_version`` and ``maximum_version`` (``ssl.TLSVersion``) bound the TLS
    version; None, the default, means TLS 1.2 and the newest OpenSSL has.
    """

    mode: str | None = None
    server_name: str | None = None
    ca_string: str | None = None
    ca_files: tuple[str, ...] = attrs.field(default=(), converter=_files)
    own_cert_string: str | None = None
    own_key_string: str | None = None
    cert_key_file: str | None = None
    auth_mode: str | None = None
    minimum_version: ssl.TLSVersion | None = None
    maximum_version: ssl.TLSVersion | None = None

    def __attrs_post_init__(self) -> None:
        if self.mode not in (None, *_MODES):
            raise ValueError(f"TLSConfig mode must be 'client', 'server' or None, not {self.mode!r}")
        if self.auth_mode not in (None, *_AUTH_MODES):
            raise ValueError(f"TLSConfig auth_mode must be 'none', 'optional' or 'required', "
                             f"not {self.auth_mode!r}")
        if (self.own_cert_string is None) != (self.own_key_string is None):
            raise ValueError("TLSConfig: own_cert_string and own_key_string go together")
        if self.own_cert_string is not None and self.cert_key_file is not None:
            raise ValueError("TLSConfig: give own_cert_string and own_key_string, or "
                             "cert_key_file, not both")
        if self.minimum_version is not None:
            import ssl  # loaded already: the caller made an ssl.TLSVersion

            if self.minimum_version < ssl.TLSVersion.TLSv1_2 and \
                    self.minimum_version != ssl.TLSVersion.MINIMUM_SUPPORTED:
                raise ValueError("TLSConfig: SP over TLS needs TLS 1.2 or newer")

    @property
    def has_own_certificate(self) -> bool:
        return self.own_cert_string is not None or self.cert_key_file is not None

    def context(self, *, server: bool) -> ssl.SSLContext:
        """A new ``ssl.SSLContext`` for this side. ``ValueError`` if the mode says the
        other side, or for a server without a certificate; ``ssl.SSLError`` or ``OSError``
        for a certificate, key or CA that OpenSSL cannot load."""
        import ssl

        side = "server" if server else "client"
        if self.mode is not None and self.mode != side:
            raise ValueError(f"a TLSConfig of mode {self.mode!r} cannot serve a "
                             f"{'bind' if server else 'connect'} (it needs mode {side!r} or None)")
        if server and not self.has_own_certificate:
            raise ValueError("a TLS server needs its certificate: own_cert_string and "
                             "own_key_string, or cert_key_file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = self.minimum_version or ssl.TLSVersion.TLSv1_2
        context.maximum_version = self.maximum_version or ssl.TLSVersion.MAXIMUM_SUPPORTED
        auth = self.auth_mode or ("none" if server else "required")
        if auth == "none":
            context.check_hostname = False
        context.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                               "required": ssl.CERT_REQUIRED}[auth]
        if self.ca_string is not None or self.ca_files:
            if self.ca_string is not None:
                context.load_verify_locations(cadata=self.ca_string)
            for path in self.ca_files:
                context.load_verify_locations(cafile=path)
        elif not server:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if self.cert_key_file is not None:
            context.load_cert_chain(self.cert_key_file)
        elif self.own_cert_string is not None and self.own_key_string is not None:
            _load_cert_strings(context, self.own_cert_string, self.own_key_string)
        return context


def _load_cert_strings(context: ssl.SSLContext, cert: str, key: str) -> None:
    """``load_cert_chain`` takes files only: write the PEM text to a file only this user
    may read (``mkstemp`` makes it 0600), load it and remove it at once."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="scaproust-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(cert if cert.endswith("\n") else cert + "\n")
            out.write(key)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)


@attrs.frozen
class TLSSetup:
    """What a TLS endpoint hands each of its pipes: the context of its side, and for a
    client the name to check the server's certificate against (None: not checked)."""

    context: ssl.SSLContext
    server_side: bool
    server_hostname: str | None = None


def prepare(tls: TLSConfig | ssl.SSLContext | None, *, server: bool,
            host: str | None = None) -> TLSSetup:
    """The setup of a TLS endpoint from the ``tls`` option or argument.

    A :class:`TLSConfig` makes the context of its side; an ``ssl.SSLContext`` is used as
    given (a client context for ``connect``, a server one for ``bind``). A client checks
    the server's certificate against ``server_name`` or, by default, ``host`` (the URL's);
    with no configuration at all a client trusts the system's CAs and a server is refused
    (it needs a certificate). Raises ``ValueError`` (or OpenSSL's error loading a file).
    """
    import ssl

    if tls is None:
        if server:
            raise ValueError("a TLS bind (tls+tcp://, wss://) needs a certificate: pass "
                             "tls=sp.TLSConfig(...) "
                             "(or an ssl.SSLContext) to bind() or set the socket's tls option")
        tls = TLSConfig()
    if isinstance(tls, TLSConfig):
        context = tls.context(server=server)
        name = tls.server_name
    elif isinstance(tls, ssl.SSLContext):
        context, name = tls, None
        wrong = ssl.PROTOCOL_TLS_CLIENT if server else ssl.PROTOCOL_TLS_SERVER
        if context.protocol == wrong:
            raise ValueError(f"a {'client' if server else 'server'} ssl.SSLContext cannot "
                             f"serve a {'bind' if server else 'connect'}")
    else:
        raise TypeError(f"tls must be an sp.TLSConfig, an ssl.SSLContext or None, not {tls!r}")
    if server:
        return TLSSetup(context, server_side=True)
    if name is None and context.check_hostname:
        name = host
    return TLSSetup(context, server_side=False, server_hostname=name)

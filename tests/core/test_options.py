"""The option table is the one source: typed declarations and endpoint defaults follow it.

``SPECS`` (core/options.py) names every option with its kind and default. The socket's
attributes (``Socket.send_timeout``, ...) and the ``Options`` slots are declared by hand, so
that IDEs and type checkers see them; these tests check the declarations against the table,
names and types, so that adding an option without its declaration (or the other way
round) fails here.
"""

from __future__ import annotations

import ssl
import typing

import attrs
import pytest

from scaproust.core.options import ENDPOINT_OPTIONS, SPECS, EndpointOptions, Options, validate
from scaproust.facade.socket import Socket, _Option
from scaproust.transports.tls import TLSConfig

#: The Python type of each kind of option (what ``validate`` returns for it).
KIND_TYPES = {
    "timeout": float | None,
    "mode": int | None,
    "seconds": float,
    "size": int,
    "int": int,
    "bool": bool,
    "str": str,
    "tls": TLSConfig | ssl.SSLContext | None,
}

EXPECTED = {name: KIND_TYPES[spec.kind] for name, spec in SPECS.items()}
#: ``ssl`` is imported under ``TYPE_CHECKING`` only (it loads with the first TLS endpoint,
#: docs/ARCHITECTURE.md): resolving the annotations needs it from here.
TYPE_NAMES = {"ssl": ssl}


def test_every_kind_has_a_type():
    assert {spec.kind for spec in SPECS.values()} <= set(KIND_TYPES)


def test_the_socket_declares_exactly_the_options_of_the_table_with_their_types():
    descriptors = [name for name, attr in vars(Socket).items() if isinstance(attr, _Option)]
    assert descriptors == list(SPECS)  # in the table's order, as docs/OPTIONS.md
    declared = {name: hint for name, hint in typing.get_type_hints(Socket, localns=TYPE_NAMES).items()
                if typing.get_origin(hint) is _Option}
    assert list(declared) == list(SPECS)
    assert {name: typing.get_args(hint)[0] for name, hint in declared.items()} == EXPECTED


def test_options_declares_exactly_the_options_of_the_table_with_their_types():
    assert typing.get_type_hints(Options, localns=TYPE_NAMES) == EXPECTED


@pytest.mark.parametrize("name", list(SPECS))
def test_each_default_is_of_its_declared_type_and_valid(name):
    spec = SPECS[name]
    assert isinstance(spec.default, typing.get_args(EXPECTED[name]) or EXPECTED[name])
    assert validate(name, spec.default) == spec.default


def test_endpoint_options_take_their_names_types_and_defaults_from_the_table():
    fields = attrs.fields(EndpointOptions)
    assert ENDPOINT_OPTIONS == tuple(field.name for field in fields)
    assert set(ENDPOINT_OPTIONS) <= set(SPECS)
    hints = typing.get_type_hints(EndpointOptions, localns=TYPE_NAMES)
    for field in fields:
        assert field.default == SPECS[field.name].default, field.name
        assert hints[field.name] == EXPECTED[field.name], field.name
    assert EndpointOptions.of(Options()) == EndpointOptions()


def test_an_option_attribute_of_the_class_is_its_declaration():
    assert isinstance(Socket.send_timeout, _Option)
    assert Socket.send_timeout.__doc__ == SPECS["send_timeout"].doc

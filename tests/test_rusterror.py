"""Rust Debug error text becomes chain, error_kind and errno."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healer.rusterror import ErrorDetail, parse_error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'VhostUserProtocol(SocketConnect(Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }))',
            ErrorDetail(("VhostUserProtocol", "SocketConnect"), "ConnectionRefused", 111),
        ),
        # CH02: the post's author changed the spacing inside the braces.
        (
            'VhostUserProtocol(SocketConnect(Os {code: 2, kind: NotFound, message: "No such file or directory"}))',
            ErrorDetail(("VhostUserProtocol", "SocketConnect"), "NotFound", 2),
        ),
        # The io::Error inside a Custom error is the cause that counts.
        (
            'HandleRequest(ReqHandlerError(Custom { kind: Other, error: SeekEnd(Os { code: 29, kind: NotSeekable, message: "Illegal seek" }) }))',
            ErrorDetail(("HandleRequest", "ReqHandlerError", "SeekEnd"), "NotSeekable", 29),
        ),
        (
            "VmReboot(DeviceManager(CreateVirtioFs(VhostUserConnect)))",
            ErrorDetail(("VmReboot", "DeviceManager", "CreateVirtioFs", "VhostUserConnect")),
        ),
        # A message continued on a second line extends the same chain.
        (
            "InternalServerError: DeviceManagerApiError(ResponseRecv(RecvError)) (CreateVirtioFs(VhostUserConnect))",
            ErrorDetail(
                (
                    "DeviceManagerApiError",
                    "ResponseRecv",
                    "RecvError",
                    "CreateVirtioFs",
                    "VhostUserConnect",
                )
            ),
        ),
        (
            'DeviceManager(IdentifierNotUnique("volume/data"))',
            ErrorDetail(("DeviceManager", "IdentifierNotUnique")),
        ),
        (
            'HttpApiClient(ServerResponse(InternalServerError, Some("")))',
            ErrorDetail(("HttpApiClient", "ServerResponse", "InternalServerError")),
        ),
        # Display text: errno from "(os error N)", kind from the errno.
        (
            "Error opening HTTP socket: Connection refused (os error 111)",
            ErrorDetail((), "ConnectionRefused", 111),
        ),
        # C strerror text.
        ("libvhost-user: Error while writing: Broken pipe", ErrorDetail((), "BrokenPipe", 32)),
        ("no error here", ErrorDetail()),
        ("", ErrorDetail()),
    ],
)
def test_known_error_texts(text: str, expected: ErrorDetail) -> None:
    assert parse_error(text) == expected


@given(st.text(max_size=300))
def test_any_text_gives_a_result(text: str) -> None:
    """Total: unbalanced brackets, stray quotes and garbage never raise."""
    detail = parse_error(text)
    assert all(name[:1].isupper() for name in detail.chain)


def test_deep_nesting_is_bounded() -> None:
    detail = parse_error("A(" * 10_000 + ")" * 10_000)
    assert 0 < len(detail.chain) <= 70

"""The holder's one refusal: a request it will not carry out, and why.

Raised while a request is handled (by :mod:`healer.holder.server` and by
:func:`healer.holder.sockets.bind`); the server answers it with a ``Failed`` reply
whose reason is the text. The brain's side of a failure is
:class:`healer.holder.client.HolderError`.
"""

__all__ = ["Refused"]


class Refused(Exception):
    """A request that cannot be carried out; the text is the reply's reason."""

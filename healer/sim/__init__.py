"""Stand-ins for parts that cannot be installed here (cloud-hypervisor's side)."""

from typing import TYPE_CHECKING, Any

from healer.sim.vhost_user import VhostUserError, VhostUserFrontend

if TYPE_CHECKING:
    from healer.sim.cloud_hypervisor import BackendStats, ChStandIn, FsConfig

__all__ = ["BackendStats", "ChStandIn", "FsConfig", "VhostUserError", "VhostUserFrontend"]

_STAND_IN = frozenset({"BackendStats", "ChStandIn", "FsConfig"})


def __getattr__(name: str) -> Any:
    """Import the stand-in on first use: ``python -m healer.sim.cloud_hypervisor`` then
    runs the module once, instead of after a second copy imported by this package."""
    if name in _STAND_IN:
        from healer.sim import cloud_hypervisor  # noqa: PLC0415 - lazy on purpose

        return getattr(cloud_hypervisor, name)
    msg = f"module 'healer.sim' has no attribute {name!r}"
    raise AttributeError(msg)

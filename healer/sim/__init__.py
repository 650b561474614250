"""Stand-ins for parts that cannot be installed here (cloud-hypervisor's side)."""

from healer.sim.vhost_user import VhostUserError, VhostUserFrontend

__all__ = ["VhostUserError", "VhostUserFrontend"]

"""Actions per target: the guest (remount) for now; the VMM API lives in healer.vmm."""

from healer.actions.guest import GuestRemount, RemountFailed

__all__ = ["GuestRemount", "RemountFailed"]

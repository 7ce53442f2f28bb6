"""Real SSH test hosts (podman containers) and the images they run."""

from .hosts import Host, HostCommandError, HostGroup, generate_key, remove_session_containers, start_hosts
from .images import ensure_image

__all__ = ["Host", "HostCommandError", "HostGroup", "ensure_image", "generate_key",
           "remove_session_containers", "start_hosts"]

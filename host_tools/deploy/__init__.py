"""`lkdevice deploy`: the robot app onto a Raspberry Pi over SSH, as a systemd service (docs/deploy.md).

`plan` is what a deploy does, as data (paths, checks, the unit, pip's command
lines); `remote` runs it over asyncssh.
"""

from .plan import DeployError, Layout, Probe, Target, render_config, render_unit
from .remote import Options, deploy, manage

__all__ = ["DeployError", "Layout", "Options", "Probe", "Target", "deploy", "manage", "render_config",
           "render_unit"]

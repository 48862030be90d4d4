"""capataz's HTTP control plane: the runbook's endpoints over the Store, behind bearer
tokens with roles (``capataz serve``). docs/runbook.md maps each runbook command."""

from capataz.api.app import create_app

__all__ = ["create_app"]

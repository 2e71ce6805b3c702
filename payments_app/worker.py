"""What `faust -A payments_app.worker worker` loads: the app with its tables, agents and views attached."""

from __future__ import annotations

import payments_app.service.agents.expiry
import payments_app.service.agents.ledger
import payments_app.service.agents.reconciler
import payments_app.service.agents.standby
import payments_app.service.watchdog
import web.internal
import web.live
import web.views
from payments_app.service.app import app

__all__ = ["app", "payments_app", "web"]

"""The service layer: the Faust app, its agents, the intake and reads of the ledger, and asking other workers."""

"""The benchmark (`payments bench`). The workload names live here so the CLI can offer them cheaply."""

WORKLOADS = ("uniform", "hot-payee", "hot-payer", "overdraft")

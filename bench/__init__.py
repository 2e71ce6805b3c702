"""The benchmark (`payments bench`). The workload names live here so the CLI can offer them cheaply."""

WORKLOADS = ("uniform", "hot-payee", "hot-payer", "overdraft", "two-phase")
#: workloads with a second phase the HTTP load (wrk) and the PostgreSQL peer do not send: Kafka and catch-up only
TWO_PHASE = "two-phase"

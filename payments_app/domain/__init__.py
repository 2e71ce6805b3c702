"""The money rules in plain Python: no Faust, no Kafka, no I/O. This is what a reviewer reads for money bugs."""

"""Running the system on one machine: a local Kafka broker, worker processes, and the `payments` dev command."""

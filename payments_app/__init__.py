"""A payment processor on Apache Kafka and Faust, after the Concurrent (segmented) model of the NCCU thesis."""

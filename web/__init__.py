"""HTTP at the edge: parse and validate, call the domain or the topics, shape JSON."""

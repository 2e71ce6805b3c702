"""Thin Faust loops: read a batch, call the domain, write tables, emit relays."""

"""The harness: sweep specs -> cells -> executors (local, Ray) -> the results store, logging
sinks, and the contract checker for submitted algorithms."""

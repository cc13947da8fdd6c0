"""Acting on jobs: an operator's request is recorded in the service's own schema (an action and
one outbox item per job, store.py), handed to the platform by one dispatcher across all workers
and instances (dispatcher.py, over transports.py), and its outcome read back from the job's row
by capture (outcome.py). This service never writes the archive tables; only the embedded demo's
executor (demo_executor.py) plays the platform there."""

"""The jobs feature: REST endpoints, their schemas, queries and the shared statistics."""

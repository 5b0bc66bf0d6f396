"""The reference system under test: the persistence layer of a humanoid-robot training lab."""

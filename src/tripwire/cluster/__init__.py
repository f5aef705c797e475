"""The cluster deployment: Kafka for the events, PostgreSQL for the state (see docs/cluster.md)."""

"""Shared fixtures, one module per concern (each owned by one part of the code base).

- tests/fixtures/services.py  real local services via scripts/services.sh
                              (kafka_bootstrap, pushgateway_url, s3_endpoint, registry_url)
- tests/fixtures/emulator.py  an in-process ServiceNow emulator per test (emulator)
- tests/fixtures/kafka.py     Kafka helpers (unique_topic, read_all)
"""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.emulator",
    "tests.fixtures.kafka",
]

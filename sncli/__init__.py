"""sncli: bounded, lossless batch runs between ServiceNow and Kafka."""

__version__ = "0.1.0"

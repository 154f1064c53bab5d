"""``sncli status``: one screen per deployment (model: pure; pushed: the Pushgateway; gather: the reads)."""

"""The tables a new ServiceNow instance already has, before anyone writes to them.

The service answers 400 "Invalid table <name>" for a table it does not have, on
every method: a misspelled table is an error, never an empty list, and a POST
never creates a table. The emulator knows a table once a test or the demo
declares it (``define_table``, ``generate``, ``insert``) or when it is one of
these out-of-box tables, which exist (empty) from the start; the first write to
one of them materialises it with the system columns.
"""

from __future__ import annotations

OUT_OF_BOX_TABLES = frozenset(
    {
        "incident",
        "problem",
        "change_request",
        "task",
        "sc_request",
        "sc_req_item",
        "sc_task",
        "cmdb_ci",
        "cmdb_ci_server",
        "kb_knowledge",
        "sys_user",
        "sys_user_group",
        "sys_journal_field",
        "sys_audit_delete",
        "sys_dictionary",
        "sys_db_object",
    }
)

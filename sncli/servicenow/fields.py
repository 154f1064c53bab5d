"""ServiceNow's own fields: the ``sys_*`` columns every table has and the platform maintains.

``sys_class_name`` decides a record's class, ``sys_domain`` its domain, ``sys_mod_count``,
``sys_updated_on`` and friends its audit trail. A writer that copies records between
instances must never send them: a PATCH carrying ``sys_class_name`` changes the record's
class, one carrying ``sys_domain`` moves it to another domain. Pure, no imports.
"""

from __future__ import annotations

SYSTEM_FIELD_PREFIX = "sys_"


def is_system_field(name: str) -> bool:
    """True for a ``sys_*`` field name, whatever its case (``SYS_CLASS_NAME`` is no way around it)."""
    return name[: len(SYSTEM_FIELD_PREFIX)].lower() == SYSTEM_FIELD_PREFIX

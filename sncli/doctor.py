"""``sncli doctor``: preflight checks an operator runs first and CI smoke runs call.

Each check answers one question with ok / warn / fail and, when it is not ok,
a hint that says what to do. The checks catch their own errors: a doctor that
crashes on the first unreachable service would hide every later finding.

Pure helpers (query field extraction, skew and time zone verdicts, the exit
code) are separate from the probes, which do the I/O.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import requests

from sncli.config import SN_DATETIME_FORMAT, BasicAuth, OAuthAuth, Settings, SourceTable
from sncli.config.fingerprints import AUDIT_DELETE_TABLE
from sncli.errors import ExitCode
from sncli.kafka.admin import existing_topics, kafka_reachable, topic_configs
from sncli.kafka.retention import deletion_risks, risk_hint
from sncli.kafka.serde import registry_client
from sncli.logs import mask_url_passwords, redact
from sncli.offsets.s3_store import make_client, put_object
from sncli.offsets.store import open_store
from sncli.servicenow.client import ServiceNowClient
from sncli.servicenow.errors import ForbiddenError, ServiceNowError
from sncli.servicenow.query import Query
from sncli.sink.calls import describe_limits
from sncli.source.runkit import source_mirror_topics
from sncli.transport_security import plain_http_off_host

Status = Literal["ok", "warn", "fail", "skip"]

CLOCK_SKEW_WARN_SECONDS = 5.0
UTC_ZONES = frozenset({"UTC", "GMT", "Etc/UTC", "Etc/GMT", "Universal", "Zulu"})
_FIELD_AT_START = re.compile(r"^([a-z0-9_]+)")  # field names are lowercase, operators upper


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


# --------------------------------------------------------------------------- pure verdicts


def exit_code_for(checks: Iterable[Check]) -> ExitCode:
    statuses = {c.status for c in checks}
    if "fail" in statuses:
        return ExitCode.FAILED
    if "warn" in statuses:
        return ExitCode.PARTIAL
    return ExitCode.OK


def query_fields(encoded_query: str) -> set[str]:
    """The top-level field names an encoded query filters or orders on.

    ServiceNow silently ignores a condition on a field it does not know, which
    turns ``activ=true`` into "every record"; knowing the fields lets doctor
    compare them with what the table really has. Dot-walked fields count by
    their first segment (the reference field on this table).
    """
    fields: set[str] = set()
    text = encoded_query.replace("^^", "\x00")  # an escaped caret is part of a value
    for clause in re.split(r"\^NQ|\^OR(?!DERBY)|\^", text):
        clause = clause.strip()
        if not clause or clause in ("EQ",):
            continue
        for prefix in ("ORDERBYDESC", "ORDERBY", "GROUPBY"):
            if clause.startswith(prefix):
                clause = clause[len(prefix):]
                break
        match = _FIELD_AT_START.match(clause)
        if match:
            fields.add(match.group(1))
    return fields


def clock_skew_check(local: datetime, server: datetime) -> Check:
    skew = (local - server).total_seconds()
    detail = f"this machine is {abs(skew):.1f}s {'ahead of' if skew >= 0 else 'behind'} ServiceNow"
    if abs(skew) > CLOCK_SKEW_WARN_SECONDS:
        return Check("clock skew", "warn", detail,
                     "sync this machine's clock (NTP); the poll's upper bound comes from ServiceNow's clock, "
                     "but lag metrics and --since/--until are read with the local one")
    return Check("clock skew", "ok", detail)


def time_zone_check(user: str, zone: str | None) -> Check:
    if zone in UTC_ZONES:
        return Check("user time zone", "ok", f"{user}: {zone}")
    shown = zone or "(empty: the instance default)"
    return Check(
        "user time zone", "warn", f"{user}: {shown}",
        "set the integration user's time zone to UTC: encoded-query date-times are read in the "
        "user's zone, so a non-UTC user shifts the cursor's window",
    )


def transport_checks(settings: Settings) -> list[Check]:
    """Where credentials or records would cross a network unencrypted or to an unverified peer (config only).

    Plain HTTP to a loopback address (the emulator, a local sidecar) stays on
    this machine and is not reported.
    """
    findings: list[str] = []
    sn = settings.servicenow
    if plain_http_off_host(sn.instance_url):
        findings.append("servicenow.instance_url is plain http://")
    if not sn.tls.verify:
        findings.append("servicenow.tls.verify is false")
    auth = sn.auth
    if isinstance(auth, OAuthAuth) and plain_http_off_host(auth.token_url or sn.instance_url):
        findings.append("OAuth token requests go over plain http:// (auth.allow_plain_http)")
    registry = settings.kafka.schema_registry
    if registry.url is not None:
        if plain_http_off_host(registry.url):
            findings.append("kafka.schema_registry.url is plain http://")
        if not registry.tls.verify:
            findings.append("kafka.schema_registry.tls.verify is false")
    if findings:
        return [Check("transport security", "warn", "; ".join(findings),
                      "use https URLs with certificate verification on (tls.ca_bundle for a private CA): "
                      "otherwise anyone on the network path can read or change credentials and records")]
    return [Check("transport security", "ok", "https with verified certificates (or loopback only)")]


def table_sample_checks(table: SourceTable, sample: dict[str, Any] | None,
                        known_fields: set[str] | None) -> list[Check]:
    """What one sample record (or the dictionary) says about a table's configured fields."""
    name = f"table {table.name}"
    checks: list[Check] = []
    if sample is not None:
        missing = [f for f in ("sys_id", table.timestamp_field) if f not in sample]
        if missing:
            checks.append(Check(f"{name} cursor fields", "fail", f"records have no {', '.join(missing)}",
                                "check timestamp_field and the integration user's field ACLs"))
        else:
            try:
                datetime.strptime(str(sample[table.timestamp_field]), SN_DATETIME_FORMAT)
            except ValueError:
                checks.append(Check(
                    f"{name} cursor fields", "fail",
                    f"{table.timestamp_field}={sample[table.timestamp_field]!r} is not 'YYYY-MM-DD HH:MM:SS'",
                    "use a glide_date_time field and sysparm_display_value=false"))
            else:
                checks.append(Check(f"{name} cursor fields", "ok",
                                    f"sys_id and {table.timestamp_field} present and parseable"))
    known = set(sample) if sample is not None else known_fields
    if table.query:
        if known is None:
            checks.append(Check(f"{name} base query", "warn", "cannot verify the query's fields: the table is "
                                "empty and sys_dictionary is not readable", "grant read on sys_dictionary"))
        else:
            unknown = sorted(query_fields(table.query) - known)
            if unknown:
                checks.append(Check(
                    f"{name} base query", "fail", f"unknown field(s) {', '.join(unknown)} in {table.query!r}",
                    "ServiceNow ignores conditions on unknown fields silently, so this query matches "
                    "more than intended; fix the field names"))
            else:
                checks.append(Check(f"{name} base query", "ok", f"fields known: {table.query!r}"))
    return checks


def topic_retention_check(topic: str, configs: Mapping[str, str] | Exception, *, mirror: bool) -> Check:
    """What an existing topic's configs do to the records sncli writes to it (:mod:`sncli.kafka.retention`)."""
    name = f"kafka topic {topic} retention"
    if isinstance(configs, Exception):
        return Check(name, "warn", f"cannot read the topic's configs: {configs}",
                     "grant DescribeConfigs on the topic, then check that its retention keeps every record")
    risks = deletion_risks(configs, mirror=mirror)
    if risks:
        return Check(name, "warn", "; ".join(risks), risk_hint(mirror=mirror))
    policy = configs.get("cleanup.policy", "delete")
    return Check(name, "ok", f"cleanup.policy={policy}: records are kept"
                 + (" (latest per key)" if "compact" in policy else ""))


# --------------------------------------------------------------------------- probes


def _safe(name: str, probe: Callable[[], list[Check]], hint: str = "") -> list[Check]:
    try:
        return probe()
    except Exception as exc:  # a failed probe is a finding, not a crash
        return [Check(name, "fail", redact(f"{type(exc).__name__}: {exc}"), hint)]


def _servicenow_checks(settings: Settings, client: ServiceNowClient) -> list[Check]:
    checks: list[Check] = []
    server = client.server_time()
    # Plain HTTP and unverified TLS are judged by transport_checks (a warning, exit 3).
    scheme = "TLS verified" if settings.servicenow.instance_url.startswith("https") and \
        settings.servicenow.tls.verify else "no TLS verification" if settings.servicenow.instance_url.startswith(
            "https") else "plain HTTP"
    shown = mask_url_passwords(settings.servicenow.instance_url)
    checks.append(Check("servicenow reachable", "ok", f"{shown} ({scheme})"))
    checks.append(clock_skew_check(datetime.now(UTC), server))
    return checks


def _auth_checks(settings: Settings, client: ServiceNowClient) -> list[Check]:
    auth = settings.servicenow.auth
    if isinstance(auth, BasicAuth):
        client.list_page("sys_user", query=Query().eq("user_name", auth.username).build(), fields=["sys_id"], limit=1)
        return [Check("auth", "ok", f"basic auth as {auth.username}")]
    client.auth.authorization()
    token = getattr(client.auth, "_token", None)
    expiry = ""
    if token is not None:
        expiry = f", expires in {token.expires_at - time.monotonic():.0f}s (refreshed at 90% of its TTL)"
    return [Check("auth", "ok", f"OAuth {auth.grant_type} token obtained{expiry}")]


def _time_zone_checks(settings: Settings, client: ServiceNowClient) -> list[Check]:
    auth = settings.servicenow.auth
    user = auth.username
    if not user:
        return [Check("user time zone", "skip", "client_credentials: no user name to look up")]
    page = client.list_page("sys_user", query=Query().eq("user_name", user).build(), fields=["user_name", "time_zone"],
                            limit=1)
    if not page.records:
        return [Check("user time zone", "warn", f"user {user} not readable in sys_user",
                      "grant read on sys_user.time_zone, or check that the zone is UTC by hand")]
    return [time_zone_check(user, str(page.records[0].get("time_zone") or "") or None)]


def _table_checks(settings: Settings, client: ServiceNowClient, table: SourceTable) -> list[Check]:
    name = f"table {table.name}"
    try:
        page = client.list_page(table.name, query=table.query or "", limit=1, no_count=False)
    except ForbiddenError:
        return [Check(f"{name} readable", "fail", "403: the integration user cannot read it",
                      f"grant the user read access to {table.name} (an ACL role such as itil or a custom one)")]
    total = f"{page.total} record(s) match" if page.total is not None else "readable"
    checks = [Check(f"{name} readable", "ok", total)]
    sample = page.records[0] if page.records else None
    if sample is None and table.query:
        # The query may filter everything out; one unfiltered record still shows the fields.
        unfiltered = client.list_page(table.name, query="", limit=1)
        sample = unfiltered.records[0] if unfiltered.records else None
    known: set[str] | None = None
    if sample is None:
        try:
            rows = client.list_page("sys_dictionary", query=Query().eq("name", table.name).build(), fields=["element"],
                                    limit=10_000).records
            known = {str(r.get("element")) for r in rows if r.get("element")} or None
        except ServiceNowError:
            known = None
    checks.extend(table_sample_checks(table, sample, known))
    if table.deletes == "audit":
        checks.append(_deletes_check(client, table))
    return checks


def _deletes_check(client: ServiceNowClient, table: SourceTable) -> Check:
    """``deletes: audit`` reads ``sys_audit_delete`` (sncli.source.deletes): readable, and is the table audited?"""
    name = f"table {table.name} deletes"
    try:
        page = client.list_page(AUDIT_DELETE_TABLE, query=f"tablename={table.name}", fields=["sys_id"], limit=1,
                                no_count=False)
    except ForbiddenError:
        return Check(name, "fail", f"403: the integration user cannot read {AUDIT_DELETE_TABLE}",
                     f"grant the user read access to {AUDIT_DELETE_TABLE}, or set deletes: none")
    recorded = "readable" if page.total is None else f"{page.total} delete(s) recorded"
    if page.total and not page.records:
        return Check(name, "warn", f"{AUDIT_DELETE_TABLE}: {recorded}, but its ACLs hide them from the user",
                     f"grant the user read access to the {AUDIT_DELETE_TABLE} rows of {table.name}")
    if table.name.startswith("sys_"):
        return Check(name, "warn", f"{AUDIT_DELETE_TABLE} {recorded}; deletes of most sys_* tables are not "
                     "recorded there", f"add {table.name} to glide.ui.audit_deleted_tables, or its deletes never "
                     "reach Kafka (sncli verify finds them)")
    return Check(name, "ok", f"{AUDIT_DELETE_TABLE} {recorded} (only deletes of audited tables are recorded)")


def _kafka_checks(settings: Settings) -> list[Check]:
    ok, detail = kafka_reachable(settings.kafka, timeout=10.0)
    if not ok:
        return [Check("kafka", "fail", detail, "check kafka.bootstrap_servers and kafka.client (security.*)")]
    checks = [Check("kafka", "ok", detail)]
    have = existing_topics(settings.kafka)
    wanted = [t.topic for t in settings.source.tables] + [t.topic for t in settings.sink.topics]
    written = [t.topic for t in settings.source.tables]  # topics sncli writes: their retention matters
    if settings.sink.topics:
        wanted.append(settings.sink.dlq_topic)
        written.append(settings.sink.dlq_topic)
    if settings.source.tables:
        wanted.append(settings.source_dlq_topic)
        written.append(settings.source_dlq_topic)
    missing = sorted(set(wanted) - set(have))
    if not missing:
        checks.append(Check("kafka topics", "ok", f"{len(set(wanted))} topic(s) present"))
    elif settings.kafka.topics.create:
        checks.append(Check("kafka topics", "ok", f"missing, created on first use: {', '.join(missing)}"))
    else:
        checks.append(Check("kafka topics", "fail", f"missing: {', '.join(missing)}",
                            "create them, or set kafka.topics.create: true"))
    present = sorted({t for t in written if t in have})
    mirrors = source_mirror_topics(settings)
    for topic, configs in sorted(topic_configs(settings.kafka, present).items()):
        checks.append(topic_retention_check(topic, configs, mirror=topic in mirrors))
    return checks


def _http_ok(url: str, what: str, *, fail_status: Status, hint: str) -> Check:
    shown = mask_url_passwords(url)  # a registry or gateway URL may carry user:password
    try:
        resp = requests.get(url, timeout=5)
    except requests.RequestException as exc:
        return Check(what, fail_status, f"{shown}: {type(exc).__name__}", hint)
    if resp.status_code >= 400:
        return Check(what, fail_status, f"{shown}: HTTP {resp.status_code}", hint)
    return Check(what, "ok", shown)


def _registry_checks(settings: Settings) -> list[Check]:
    url = settings.kafka.schema_registry.url
    uses_avro = settings.source.format == "avro"
    if url is None:
        if uses_avro:
            return [Check("schema registry", "fail", "source.format is avro but no schema_registry.url",
                          "set kafka.schema_registry.url")]
        return [Check("schema registry", "skip", "not configured")]
    # The client the runs use: its URL, basic auth, CA bundle and client certificate.
    subjects = registry_client(settings.kafka.schema_registry).get_subjects()
    return [Check("schema registry", "ok", f"{url}: {len(subjects)} subject(s)")]


def _pushgateway_checks(settings: Settings) -> list[Check]:
    url = settings.metrics.pushgateway
    if url is None:
        return [Check("pushgateway", "skip", "not configured")]
    # A Pushgateway that is down never fails a run, so it is a warning here too.
    return [_http_ok(f"{url}/-/ready", "pushgateway", fail_status="warn",
                     hint="metrics will be lost until it is reachable; runs still succeed")]


def _offsets_checks(settings: Settings) -> list[Check]:
    store = open_store(settings)
    stored = store.load_all()
    offsets = settings.offsets
    if offsets.store == "file":
        directory = Path(offsets.path).resolve().parent
        fd, probe = tempfile.mkstemp(prefix=".sncli-doctor-", dir=directory)
        os.close(fd)
        os.unlink(probe)
        return [Check("offsets store", "ok", f"{store.location}: {len(stored)} cursor(s), directory writable")]
    client = make_client(offsets.endpoint_url, offsets.region)
    probe_key = f"{offsets.key}.doctor-probe"
    try:
        put_object(client, offsets.bucket, probe_key, b"{}", None, "doctor probe")
    finally:
        client.delete_object(Bucket=offsets.bucket, Key=probe_key)
    return [Check("offsets store", "ok",
                  f"{store.location}: {len(stored)} cursor(s), conditional write (If-None-Match) works")]


def limits_check(settings: Settings) -> Check:
    """What the configured limits allow a drain (write mode, calls in flight, client rate limit); config only."""
    detail = "; ".join(describe_limits(settings, settings.sink.workers))
    if settings.servicenow.rate_limit is not None:
        return Check("sink limits", "warn", detail,
                     "a client rate limit caps every drain at that pace even when the instance could take more; "
                     "remove it (rate_limit: null) to let adaptive concurrency follow the instance's 429s")
    return Check("sink limits", "ok", detail)


def run_doctor(settings: Settings) -> list[Check]:
    """Every check, in the order an operator would fix things."""
    checks = [Check("config", "ok", f"{len(settings.source.tables)} source table(s), "
                                    f"{len(settings.sink.topics)} sink topic(s)")]
    checks.extend(transport_checks(settings))
    if settings.sink.topics:
        checks.append(limits_check(settings))
    with ServiceNowClient(settings.servicenow) as client:
        reach = _safe("servicenow reachable", lambda: _servicenow_checks(settings, client),
                      "check servicenow.instance_url, the network path, tls.ca_bundle and proxy")
        checks.extend(reach)
        if all(c.status != "fail" for c in reach):
            auth = _safe("auth", lambda: _auth_checks(settings, client),
                         "check the credentials (and the OAuth client's grant types)")
            checks.extend(auth)
            if all(c.status != "fail" for c in auth):
                checks.extend(_safe("user time zone", lambda: _time_zone_checks(settings, client)))
                for table in settings.source.tables:
                    checks.extend(_safe(f"table {table.name}", partial(_table_checks, settings, client, table)))
    checks.extend(_safe("kafka", lambda: _kafka_checks(settings), "check kafka.bootstrap_servers"))
    checks.extend(_safe("schema registry", lambda: _registry_checks(settings),
                        "check kafka.schema_registry (url, basic_auth_user_info, tls)"))
    checks.extend(_safe("pushgateway", lambda: _pushgateway_checks(settings)))
    checks.extend(_safe("offsets store", lambda: _offsets_checks(settings),
                        "check offsets.path permissions, or the S3 bucket, credentials and endpoint"))
    return checks

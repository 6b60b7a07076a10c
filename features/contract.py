"""The data contract: what an interaction history looks like once it is inside the service.

Every loader produces, and every feature function consumes, these canonical tables. Source
systems with other column names or timestamp formats are mapped onto them by the column mapping
in the project config (see ``features.loading``), so the rest of the code never sees a CRM
export's own naming.

Canonical in-memory representation (what ``features.validation`` returns):

events
    customer_id  : pandas Categorical of str   (required)
    timestamp    : datetime64[ns], naive UTC     (required)
    event_type   : pandas Categorical of str     (required; canonical names below, others kept)
    amount       : float64, revenue in currency units, NaN where not applicable (optional)
    quantity     : float64 (optional)
    category     : pandas Categorical of str, product line (optional)
    channel      : pandas Categorical of str (optional)

customers (optional)
    customer_id, signup_date (datetime64[ns] naive UTC) and any attribute columns
    (e.g. country, acquisition_channel, customer_type B2B/B2C).

subscriptions (optional)
    customer_id, plan (str), start_date, end_date (NaT while active), mrr (float64).
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """Canonical event types. Exports may use other names: map them with ``event_type_mapping``."""

    VISIT = "visit"  # a login / website or store visit
    PURCHASE = "purchase"  # carries amount, quantity and category
    SUPPORT_TICKET = "support_ticket"  # a ticket opened
    TICKET_RESOLVED = "ticket_resolved"  # a ticket closed; unresolved = opened - resolved
    COMPLAINT = "complaint"
    CAMPAIGN_OPEN = "campaign_open"  # marketing e-mail opened
    CAMPAIGN_CLICK = "campaign_click"  # marketing e-mail clicked through
    SUBSCRIPTION_CHANGE = "subscription_change"  # plan upgrade / downgrade / renewal


EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)

EVENTS_REQUIRED: tuple[str, ...] = ("customer_id", "timestamp", "event_type")
EVENTS_OPTIONAL: tuple[str, ...] = ("amount", "quantity", "category", "channel")
EVENTS_COLUMNS: tuple[str, ...] = EVENTS_REQUIRED + EVENTS_OPTIONAL

CUSTOMERS_REQUIRED: tuple[str, ...] = ("customer_id",)
CUSTOMERS_KNOWN: tuple[str, ...] = (
    "customer_id",
    "signup_date",
    "country",
    "acquisition_channel",
    "customer_type",
)

SUBSCRIPTIONS_REQUIRED: tuple[str, ...] = ("customer_id", "plan", "start_date", "mrr")
SUBSCRIPTIONS_COLUMNS: tuple[str, ...] = ("customer_id", "plan", "start_date", "end_date", "mrr")

#: Columns of each table that hold timestamps (parsed, normalised to naive UTC).
TIMESTAMP_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("timestamp",),
    "customers": ("signup_date",),
    "subscriptions": ("start_date", "end_date"),
}

#: Columns of each table that are categorical strings.
CATEGORICAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("customer_id", "event_type", "category", "channel"),
    "customers": ("customer_id",),
    "subscriptions": ("customer_id", "plan"),
}

#: Identifier and time columns a feature table always carries.
FEATURE_KEY_COLUMNS: tuple[str, ...] = ("customer_id", "cutoff")

#: Label columns written by ``features.labels`` (NaN where not eligible or not matured).
LABEL_COLUMNS: tuple[str, ...] = ("churn_label", "upsell_label", "winback_label")


class DataContractError(ValueError):
    """A structural problem that makes a table unusable (e.g. a required column is missing).

    Row-level problems never raise this: they are quarantined and reported instead.
    """

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
    event_id     : pandas Categorical of str, the source's own id of the event (optional; only
                   kept when the source has it). Two rows with the same event_id that are
                   otherwise identical are one event exported twice and are always removed;
                   without it, identical rows are told apart by ``SourceConfig.duplicates``.

customers (optional)
    customer_id, signup_date (datetime64[ns] naive UTC) and any attribute columns
    (e.g. country, acquisition_channel, customer_type B2B/B2C).

subscriptions (optional)
    customer_id         : pandas Categorical of str (required)
    plan                : pandas Categorical of str (required)
    start_date          : datetime64[ns] naive UTC (required)
    mrr                 : float64, monthly recurring revenue of the row (required)
    end_date            : datetime64[ns], NaT while running (always present in the clean table).
                          When the subscription actually ended or was cancelled: only known once
                          it happens, so features treat an end at or after the cutoff as unknown.
                          Accepted under the canonical alias ``cancelled_at``.

    The scheduled term, known when the row starts (optional, kept only when the source has them):

    bill_period_months  : float64, whole months >= 1: the plan renews every N months from
                          start_date (1 monthly, 6 half-yearly, 12 annual)
    term_end            : datetime64[ns], the end of the committed term (the next renewal date)
                          as known when the row starts; alias ``renewal_date``
    seats               : float64, seats / licences / units of the row; aliases ``quantity`` and
                          ``units`` (any other name: map it with the column mapping)
    price               : float64, amount invoiced per billing period (default: mrr x period)
    discount            : float64 >= 0, as the export gives it: either a fraction of the list
                          price (0.2 = 20 % off) or an amount in currency per billing period;
                          passed through unchanged, so keep one convention per source
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
#: The source's own event id: optional, kept in the clean table only when the source has it.
EVENT_ID = "event_id"
#: Every canonical events column a source may have.
EVENTS_KNOWN: tuple[str, ...] = EVENTS_COLUMNS + (EVENT_ID,)

CUSTOMERS_REQUIRED: tuple[str, ...] = ("customer_id",)
CUSTOMERS_KNOWN: tuple[str, ...] = (
    "customer_id",
    "signup_date",
    "country",
    "acquisition_channel",
    "customer_type",
)

SUBSCRIPTIONS_REQUIRED: tuple[str, ...] = ("customer_id", "plan", "start_date", "mrr")
#: Columns every clean subscriptions table has (end_date is NaT when the source has none).
SUBSCRIPTIONS_COLUMNS: tuple[str, ...] = ("customer_id", "plan", "start_date", "end_date", "mrr")
#: The scheduled term and seat columns: optional, kept only when the source has them.
SUBSCRIPTIONS_TERM_COLUMNS: tuple[str, ...] = (
    "bill_period_months",
    "term_end",
    "seats",
    "price",
    "discount",
)
#: Every canonical subscriptions column a source may have.
SUBSCRIPTIONS_KNOWN: tuple[str, ...] = SUBSCRIPTIONS_COLUMNS + SUBSCRIPTIONS_TERM_COLUMNS
#: Accepted alternative canonical names, renamed on load when the canonical column is absent.
SUBSCRIPTIONS_ALIASES: dict[str, str] = {
    "cancelled_at": "end_date",
    "renewal_date": "term_end",
    "quantity": "seats",
    "units": "seats",
}

#: Columns of each table that hold timestamps (parsed, normalised to naive UTC).
TIMESTAMP_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": ("timestamp",),
    "customers": ("signup_date",),
    "subscriptions": ("start_date", "end_date", "term_end"),
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


def apply_aliases(columns: list[str], aliases: dict[str, str]) -> list[str]:
    """Column names with each alias renamed to its canonical name, unless that name is taken.

    The first alias of a canonical name wins; later ones (and aliases of a name the table
    already has) keep their own name, so they are reported as columns outside the contract.
    """
    taken = set(columns)
    renamed = []
    for column in columns:
        target = aliases.get(column)
        if target is not None and target not in taken:
            taken.add(target)
            renamed.append(target)
        else:
            renamed.append(column)
    return renamed


class DataContractError(ValueError):
    """A structural problem that makes a table unusable (e.g. a required column is missing).

    Row-level problems never raise this: they are quarantined and reported instead.
    """

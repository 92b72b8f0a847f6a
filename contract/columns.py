"""Names of the data-contract columns and the action vocabulary, in one place."""

from __future__ import annotations


class Columns:
    """Column names of the events and items files (DESIGN.md section 3)."""

    user = "user_id"
    item = "item_id"
    session = "session_id"
    timestamp = "timestamp"
    action = "action"
    context = "context"
    scenario = "scenario"
    event_id = "event_id"
    category = "category"
    seller = "seller"
    title = "title"
    description = "description"
    attributes = "attributes"  # "brand:12|cat:3|cat:7": several values, each a key:value token

    events_required = (user, item)
    events_optional = (session, timestamp, action, context, scenario, event_id)
    items_required = (item,)
    items_optional = (category, seller, title, description, attributes)


# Other libraries' names for contract columns, read as the contract's when the file lacks the contract's own:
# RecTools' interactions are user_id, item_id, weight, datetime.
COLUMN_ALIASES: dict[str, str] = {"datetime": Columns.timestamp}

# Ordered by strength: a session item's label is the strongest action seen on it.
ACTIONS: tuple[str, ...] = ("show", "click", "cart", "pay")
ACTION_CODES: dict[str, int] = {name: code for code, name in enumerate(ACTIONS)}
SHOW, CLICK, CART, PAY = (ACTION_CODES[name] for name in ACTIONS)

ATTRIBUTE_SEPARATOR = "|"
MAX_ATTRIBUTES = 32  # per item: more are cut (a bag's mean over more barely moves)

DEFAULT_CONTEXT = "<default>"
DEFAULT_SCENARIO = "<default>"
DEFAULT_SESSION_GAP_S = 30 * 60

"""A synthetic e-commerce world with a known ground truth, so models can be checked against an oracle.

Ground truth (what a model can learn, and what the oracle knows):
- `n_categories` categories, each with a unit centroid `mu_c` in R^d; category sizes follow a Zipf-like law.
- Item i has a category c_i, a seller (sellers stick to one or two categories), a latent vector
  v_i = normalise(mu_c + 0.6 * noise) and a lognormal popularity pop_i.
- User u has three interest categories with Dirichlet(1, 1, 1) weights. Interests drift: over the user's life
  one of the three is replaced, linearly in session order (phase a -> phase b). The user's taste vector is the
  weighted mean of the interest centroids plus noise.
- Every session has a scenario and a context known *before* its items are shown:
  - `search` (50%): the context is `search:<category word>`, the session's intent category;
  - `home` (35%): the context is `home`; the intent is drawn from the user's interests (not in the context);
  - `cart` (15%): the context is `cart`; the intent is the previous session's intent (complements).
- The logging policy shows 10-30 distinct items: a share from the context-relevant categories (search 80%,
  home 60%, cart 60%; chosen within the category by popularity), the rest globally popular.
- A shown item is clicked with probability sigmoid(4 cos(taste_u, v_i) + 1.5 [c_i = intent] - 4.0);
  a click becomes a cart with 20%, a cart a pay with 50%.
Hence a model that reads the history (tastes, interests) and the context (intent) can beat popularity by far.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from contract.columns import ACTIONS, CART, CLICK, PAY, SHOW
from contract.table_io import write_table
from contract.vocab import Vocabularies
from evaluation.ranking import top_k
from evaluation.splits import EvalCases

SCENARIOS = ("search", "home", "cart")
SCENARIO_SHARE = np.array([0.50, 0.35, 0.15])
RELEVANT_SHARE = np.array([0.80, 0.60, 0.60])  # by scenario: shown items from the context-relevant categories
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "da", "fi", "gu", "ho", "ji", "be")
GENERIC_WORDS = ("new", "classic", "pro", "mini", "eco", "max", "soft", "smart")
# A word for each sign of each latent dimension (up to 16): a title names the item's strongest traits.
TRAIT_WORDS = (("red", "blue"), ("large", "small"), ("cotton", "leather"), ("cheap", "luxury"), ("sport", "formal"),
               ("kids", "adult"), ("summer", "winter"), ("wooden", "metal"), ("bright", "dark"), ("light", "heavy"),
               ("organic", "synthetic"), ("vintage", "modern"), ("quiet", "loud"), ("round", "square"),
               ("smooth", "rough"), ("sweet", "spicy"))
TRAITS_PER_TITLE = 3
START_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z
SPARE_SLOTS = 15


@dataclass
class SynthConfig:
    n_users: int = 10_000
    n_items: int = 5_000
    seed: int = 0
    n_categories: int = 0  # 0: scaled with the catalogue
    mean_sessions: float = 6.0  # per user, >= 1
    dim: int = 16  # latent dimension of the ground truth
    taste_weight: float = 4.0
    intent_weight: float = 1.5
    click_bias: float = -4.0
    cart_given_click: float = 0.2
    pay_given_cart: float = 0.5

    def categories(self) -> int:
        return self.n_categories or int(np.clip(self.n_items // 60, 8, 300))


@dataclass
class SyntheticWorld:
    """The ground-truth parameters; `oracle_scores` ranks items as well as anyone can without seeing the future."""

    config: SynthConfig
    category_words: np.ndarray  # (C,) object
    item_category: np.ndarray  # (M,) int
    item_vector: np.ndarray  # (M, d) float32, unit rows
    item_popularity: np.ndarray  # (M,) float, sums to 1
    user_taste: np.ndarray  # (N, d) float32: taste at the end of the user's history (phase b)
    user_interest: np.ndarray  # (N, C) float32: interest mixture at the end of the history

    def oracle_scores(self, user: int, context: str) -> np.ndarray:
        """(M,) expected clicks of every item in `user`'s next session under `context`."""
        interest = self.user_interest[user]
        words = list(self.category_words)
        if context.startswith("search:") and context[len("search:"):] in words:
            intent = np.zeros_like(interest)
            intent[words.index(context[len("search:"):])] = 1.0
            relevant_share = RELEVANT_SHARE[0]
        else:
            intent, relevant_share = interest, RELEVANT_SHARE[1]
        within = self._within_category_popularity()
        shown = relevant_share * intent[self.item_category] * within + (1 - relevant_share) * self.item_popularity
        cfg = self.config
        logit = (cfg.taste_weight * self.item_vector @ self.user_taste[user]
                 + cfg.intent_weight * intent[self.item_category] + cfg.click_bias)
        return shown / (1.0 + np.exp(-logit))

    def _within_category_popularity(self) -> np.ndarray:
        totals = np.bincount(self.item_category, weights=self.item_popularity, minlength=len(self.category_words))
        return self.item_popularity / totals[self.item_category]

    def save(self, path: str | Path) -> None:
        arrays = {k: v for k, v in asdict(self).items() if isinstance(v, np.ndarray)}
        arrays["category_words"] = arrays["category_words"].astype(str)
        np.savez_compressed(path, **arrays, config=json.dumps(asdict(self.config)))

    @classmethod
    def load(cls, path: str | Path) -> SyntheticWorld:
        with np.load(path, allow_pickle=False) as arrays:
            fields = {name: arrays[name] for name in arrays.files if name != "config"}
            config = SynthConfig(**json.loads(str(arrays["config"])))
        fields["category_words"] = fields["category_words"].astype(object)
        return cls(config=config, **fields)


def generate(config: SynthConfig) -> tuple[pd.DataFrame, pd.DataFrame, SyntheticWorld]:
    """(events, items, world) for `config`; the same config always gives the same world."""
    rng = np.random.default_rng(config.seed)
    catalogue = _make_catalogue(config, rng)
    users = _make_users(config, catalogue, rng)
    sessions = _make_sessions(config, users, rng)
    events = _make_events(config, catalogue, users, sessions, rng)
    world = SyntheticWorld(
        config=config, category_words=catalogue["words"], item_category=catalogue["category"],
        item_vector=catalogue["vector"], item_popularity=catalogue["popularity"],
        user_taste=users["taste_b"], user_interest=users["interest_b"],
    )
    return events, catalogue["items"], world



def write_world(config: SynthConfig, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, SyntheticWorld]:
    """events.parquet, items.parquet, world.npz (the ground truth the oracle reads) and world.json under `out`;
    returns what it wrote, as `generate` does."""
    events, items, world = generate(config)
    out.mkdir(parents=True, exist_ok=True)
    write_table(events, out / "events.parquet")
    write_table(items, out / "items.parquet")
    world.save(out / "world.npz")
    (out / "world.json").write_text(json.dumps(asdict(config), indent=2))
    return events, items, world

def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def _category_words(n_categories: int) -> np.ndarray:
    n = len(SYLLABLES)
    return np.array([SYLLABLES[c % n] + SYLLABLES[(c // n) % n] + SYLLABLES[(c // n // n) % n] + "x"
                     for c in range(n_categories)], dtype=object)


def _make_catalogue(config: SynthConfig, rng: np.random.Generator) -> dict:
    n_cat, n_items = config.categories(), config.n_items
    category_share = 1.0 / np.arange(1, n_cat + 1) ** 0.7
    category = rng.choice(n_cat, size=n_items, p=category_share / category_share.sum())
    centroid = _unit(rng.normal(size=(n_cat, config.dim)))
    vector = _unit(centroid[category] + 0.6 * rng.normal(size=(n_items, config.dim)) / np.sqrt(config.dim) * 4)
    popularity = rng.lognormal(0.0, 1.2, size=n_items)
    popularity /= popularity.sum()
    n_sellers = max(4, n_items // 25)
    seller_home = rng.integers(0, n_cat, size=n_sellers)
    # A seller sells in its home category; an item picks a seller of its own category when there is one.
    seller = rng.integers(0, n_sellers, size=n_items)
    by_category = pd.Series(np.arange(n_sellers)).groupby(seller_home).apply(np.array).to_dict()
    own = np.array([len(by_category.get(c, ())) > 0 for c in range(n_cat)])[category]
    seller[own] = [rng.choice(by_category[c]) for c in category[own]]
    words = _category_words(n_cat)
    detail_words = np.array([w[:2] + s for w in words for s in SYLLABLES[:4]], dtype=object).reshape(n_cat, 4)
    pick = rng.integers(0, 4, size=(n_items, 2))
    generic = np.array(GENERIC_WORDS, dtype=object)[rng.integers(0, len(GENERIC_WORDS), size=n_items)]
    titles = generic + " " + words[category] + " " + detail_words[category, pick[:, 0]] + " " \
        + _trait_words(vector - centroid[category])
    items = pd.DataFrame({"item_id": np.arange(n_items), "category": words[category],
                          "seller": [f"s{s}" for s in seller], "title": titles})
    return {"items": items, "category": category, "vector": vector, "popularity": popularity, "words": words,
            "centroid": centroid}


def _trait_words(deviation: np.ndarray) -> np.ndarray:
    """The words of each item's TRAITS_PER_TITLE strongest latent traits (how its vector departs from its
    category's centroid): what the item is, readable before anyone acts on it (issue 25's content features)."""
    deviation = deviation[:, : len(TRAIT_WORDS)]  # (a world wider than 16 dimensions names its first 16)
    words = np.array(TRAIT_WORDS, dtype=object)[: deviation.shape[1]]  # (dim, 2)
    strongest = np.argsort(-np.abs(deviation), axis=1)[:, :TRAITS_PER_TITLE]  # (n_items, traits)
    sign = (np.take_along_axis(deviation, strongest, axis=1) < 0).astype(np.int64)
    chosen = words[strongest, sign]  # (n_items, traits)
    return np.array([" ".join(row) for row in chosen], dtype=object)


def _make_users(config: SynthConfig, catalogue: dict, rng: np.random.Generator) -> dict:
    n_users, n_cat = config.n_users, len(catalogue["words"])
    category_mass = np.bincount(catalogue["category"], weights=catalogue["popularity"], minlength=n_cat)
    p_category = (category_mass + 1e-3) / (category_mass + 1e-3).sum()
    cats_a = np.stack([rng.choice(n_cat, size=n_users, p=p_category) for _ in range(3)], axis=1)
    cats_b = cats_a.copy()
    drifted_slot = rng.integers(0, 3, size=n_users)
    cats_b[np.arange(n_users), drifted_slot] = rng.choice(n_cat, size=n_users, p=p_category)
    weights = rng.dirichlet(np.ones(3), size=n_users)
    noise = rng.normal(size=(n_users, config.dim)) * 0.3 / np.sqrt(config.dim) * 4
    taste_a = _unit(np.einsum("us,usd->ud", weights, catalogue["centroid"][cats_a]) + noise)
    taste_b = _unit(np.einsum("us,usd->ud", weights, catalogue["centroid"][cats_b]) + noise)
    interest_b = np.zeros((n_users, n_cat), dtype=np.float32)
    np.add.at(interest_b, (np.arange(n_users)[:, None], cats_b), weights)
    return {"cats_a": cats_a, "cats_b": cats_b, "weights": weights, "taste_a": taste_a, "taste_b": taste_b,
            "interest_b": interest_b}


def _draw_interest(users: dict, user: np.ndarray, phase_b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One interest category per row, drawn from the user's mixture in phase a or b."""
    cumulative = np.cumsum(users["weights"][user], axis=1)
    slot = np.minimum((rng.random(len(user))[:, None] > cumulative).sum(axis=1), 2)
    return np.where(phase_b, users["cats_b"][user, slot], users["cats_a"][user, slot])


def _make_sessions(config: SynthConfig, users: dict, rng: np.random.Generator) -> dict:
    n_sessions_per_user = 1 + rng.poisson(max(config.mean_sessions - 1, 0), size=config.n_users)
    user = np.repeat(np.arange(config.n_users), n_sessions_per_user)
    first = np.r_[0, np.cumsum(n_sessions_per_user)[:-1]]
    rank = np.arange(len(user)) - np.repeat(first, n_sessions_per_user)  # j-th session of its user
    life = np.maximum(n_sessions_per_user[user] - 1, 1)
    progress = rank / life  # 0 at the first session, 1 at the last
    phase_b = rng.random(len(user)) < progress
    intent = _draw_interest(users, user, phase_b, rng)
    scenario = rng.choice(len(SCENARIOS), size=len(user), p=SCENARIO_SHARE)
    scenario[(scenario == 2) & (rank == 0)] = 1  # no cart page before anything happened
    is_cart = scenario == 2
    intent[is_cart] = intent[np.flatnonzero(is_cart) - 1]
    gaps = rng.exponential(3 * 86_400, size=len(user)).astype(np.int64) + 600
    gaps[first] = rng.integers(0, 60 * 86_400, size=config.n_users)
    start = START_TIME + _cumsum_within(gaps, first, n_sessions_per_user)
    return {"user": user, "progress": progress, "phase_b": phase_b, "intent": intent, "scenario": scenario,
            "start": start}


def _cumsum_within(values: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    total = np.cumsum(values)
    return total - np.repeat(total[first] - values[first], lengths)


def _sample_in_category(catalogue: dict, category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Items drawn by popularity within each row's category (one sorted search over all categories)."""
    item_category, popularity = catalogue["category"], catalogue["popularity"]
    order = np.lexsort((np.arange(len(item_category)), item_category))
    sorted_category = item_category[order]
    mass = np.bincount(item_category, weights=popularity, minlength=len(catalogue["words"]))
    within = np.cumsum(popularity[order]) - np.r_[0, np.cumsum(mass)][sorted_category]
    keys = sorted_category + within / np.maximum(mass[sorted_category], 1e-12)
    empty = mass[category] == 0  # a category without items: fall back to a popular item
    targets = np.where(empty, 0, category) + rng.random(len(category)) * (1 - 1e-9)
    position = np.minimum(np.searchsorted(keys, targets), len(order) - 1)
    return order[position]


def _make_events(config: SynthConfig, catalogue: dict, users: dict, sessions: dict,
                 rng: np.random.Generator) -> pd.DataFrame:
    n_sessions = len(sessions["user"])
    n_shown = rng.integers(10, 31, size=n_sessions)
    # Draw spare popular slots per session, so that after dropping repeats every session still shows n_shown.
    n_slots = n_shown + SPARE_SLOTS
    slot_session = np.repeat(np.arange(n_sessions), n_slots)
    slot_rank = np.arange(len(slot_session)) - np.repeat(np.cumsum(n_slots) - n_slots, n_slots)
    slot_user = sessions["user"][slot_session]
    slot_scenario = sessions["scenario"][slot_session]
    relevant = (rng.random(len(slot_session)) < RELEVANT_SHARE[slot_scenario]) & (slot_rank < n_shown[slot_session])
    home = slot_scenario == 1
    relevant_category = sessions["intent"][slot_session].copy()
    relevant_category[home] = _draw_interest(users, slot_user[home], sessions["phase_b"][slot_session][home], rng)
    popular = np.searchsorted(np.cumsum(catalogue["popularity"]), rng.random(len(slot_session)) * (1 - 1e-9))
    item = np.where(relevant, _sample_in_category(catalogue, relevant_category, rng), popular)
    item = np.minimum(item, config.n_items - 1)
    _, first_of_pair = np.unique(slot_session.astype(np.int64) * config.n_items + item, return_index=True)
    keep = np.sort(first_of_pair)  # one show per (session, item), in slot order
    slot_session, item = slot_session[keep], item[keep]
    rank_after_dedup = np.arange(len(keep)) - np.searchsorted(slot_session, slot_session)
    keep = rank_after_dedup < n_shown[slot_session]
    slot_session, item = slot_session[keep], item[keep]
    progress = sessions["progress"][slot_session][:, None]
    user = sessions["user"][slot_session]
    taste = _unit((1 - progress) * users["taste_a"][user] + progress * users["taste_b"][user])
    logit = (config.taste_weight * np.einsum("ed,ed->e", taste, catalogue["vector"][item])
             + config.intent_weight * (catalogue["category"][item] == sessions["intent"][slot_session])
             + config.click_bias)
    click = rng.random(len(item)) < 1.0 / (1.0 + np.exp(-logit))
    cart = click & (rng.random(len(item)) < config.cart_given_click)
    pay = cart & (rng.random(len(item)) < config.pay_given_cart)
    return _event_rows(config, catalogue, sessions, slot_session, item, click, cart, pay, rng)


def _event_rows(config: SynthConfig, catalogue: dict, sessions: dict, slot_session: np.ndarray,
                item: np.ndarray, click: np.ndarray, cart: np.ndarray, pay: np.ndarray,
                rng: np.random.Generator) -> pd.DataFrame:
    """One row per action: every shown item a `show`, then `click`, `cart`, `pay` rows a little later."""
    click_delay = rng.integers(5, 300, size=len(item))
    parts = []
    for action, mask, delay in ((SHOW, np.ones(len(item), bool), 0), (CLICK, click, 0),
                                (CART, cart, 60), (PAY, pay, 120)):
        offset = np.zeros(len(item), np.int64) if action == SHOW else click_delay + delay
        parts.append((slot_session[mask], item[mask], np.full(mask.sum(), action, np.int8), offset[mask]))
    session, item_ids, action, offset = (np.concatenate(column) for column in zip(*parts, strict=True))
    timestamp = sessions["start"][session] + offset
    order = np.lexsort((action, timestamp, session))
    session, item_ids, action, timestamp = session[order], item_ids[order], action[order], timestamp[order]
    scenario = sessions["scenario"][session]
    words = catalogue["words"][sessions["intent"][session]]
    context = np.where(scenario == 0, "search:" + words.astype(str), np.array(SCENARIOS)[scenario])
    return pd.DataFrame({
        "event_id": np.arange(len(session), dtype=np.int64),
        "user_id": sessions["user"][session],
        "session_id": session,
        "timestamp": timestamp,
        "item_id": item_ids,
        "action": pd.Categorical.from_codes(action, categories=list(ACTIONS)),
        "context": pd.Categorical(context),
        "scenario": pd.Categorical.from_codes(scenario, categories=list(SCENARIOS)),
    })


class OracleModel:
    """Ranks by the world's ground truth (`oracle_scores`): the ceiling any model can reach on this world."""

    name = "oracle (ground truth)"

    def __init__(self, world: SyntheticWorld, vocabs: Vocabularies):
        self.world = world
        # Synthetic ids are integers: item and user codes map back to the world's indices through them.
        self.item_index = np.r_[0, np.array(vocabs.items.ids[1:], dtype=np.int64)]
        self.user_index = vocabs.users
        self.context_text = vocabs.contexts

    def recommend(self, cases: EvalCases, k: int, viewed: tuple[np.ndarray, np.ndarray] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
        def score_rows(rows: np.ndarray) -> np.ndarray:
            scores = np.zeros((len(rows), len(self.item_index)), dtype=np.float32)
            for local, case in enumerate(rows):
                user = int(self.user_index.ids[cases.user[case]])
                context = self.context_text.ids[cases.context[case]]
                scores[local, 1:] = self.world.oracle_scores(user, context)[self.item_index[1:]]
            return scores

        return top_k(score_rows, len(cases), k, *viewed or ())

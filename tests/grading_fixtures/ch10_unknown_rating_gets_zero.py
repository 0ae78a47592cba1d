"""An unknown rating quietly gets margin 0 (dict.get with a default): a typo in the data is never
noticed."""
EXPECT_FAIL = {"margin_for_rating_rejects_unknown"}

_TABLES = {"small": (1.0, 2 / 3, 1 / 3, 0.0), "large": (3.0, 2.0, 1.0, 0.0)}


def margin_for_rating(rating, margins="small"):
    table = dict(zip(RATING_LEVELS, _TABLES.get(margins, _TABLES["small"])))  # noqa: F821 - the notebook's
    return table.get(rating, 0.0)

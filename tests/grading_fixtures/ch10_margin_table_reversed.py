"""The margin table read from the wrong end: "significantly better" gets no margin and the unsure
pairs the largest one."""
EXPECT_FAIL = {"margin_for_rating_tables"}

_TABLES = {"small": (0.0, 1 / 3, 2 / 3, 1.0), "large": (0.0, 1.0, 2.0, 3.0)}


def margin_for_rating(rating, margins="small"):
    if margins not in _TABLES:
        raise ValueError(f"margins must be one of {sorted(_TABLES)}, got {margins!r}")
    if rating not in RATING_LEVELS:  # noqa: F821 - the notebook's
        raise ValueError(f"rating must be one of {RATING_LEVELS}, got {rating!r}")  # noqa: F821
    return _TABLES[margins][RATING_LEVELS.index(rating)]  # noqa: F821

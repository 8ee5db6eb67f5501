"""What more than one chapter-05 check uses: whether an answer passes compare()."""

from ddlearn.checks import compare


def matches(yours, expected) -> bool:
    """Whether `yours` passes compare() (a tensor of the same shape and values)."""
    try:
        compare("", yours, expected)
    except Exception:
        return False
    return True

"""Whitespace-separated tokens of the CMU text formats (ASF/AMC and BVH)."""


def is_number(token: str) -> bool:
  """Whether `float` reads the token (the readers' test for where numbers stop)."""
  try:
    float(token)
  except ValueError:
    return False
  return True

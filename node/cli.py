"""Placeholder replaced below."""
def main(argv=None) -> int:
    return 0

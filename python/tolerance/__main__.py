"""`python -m tolerance`: the same click group as the `tolerance` console script."""
from tolerance.cli import main

if __name__ == "__main__":
    main()

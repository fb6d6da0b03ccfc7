"""`python -m raylite.node ...`: this machine's node manager (manager.main)."""

from .manager import main

if __name__ == "__main__":
    main()

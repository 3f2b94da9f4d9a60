"""``python -m grpokit.rl ...`` is ``grpokit rl ...``."""

from grpokit.rl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m proxy``: the same command as the ``mail-proxy`` console script."""

from proxy.cli import main

if __name__ == "__main__":
    main(prog_name="mail-proxy")

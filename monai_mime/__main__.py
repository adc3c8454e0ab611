"""``python -m monai_mime ...`` runs the ``monai-mime`` command line."""

from monai_mime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""SVG icon configs (HiVG tokens: configs/svg/hivg.py)."""

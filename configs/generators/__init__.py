"""Generator configs (sudoku, digits, patches, ImageNet MaskGIT): one experiment per file."""

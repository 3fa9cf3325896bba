"""Products, variants, categories, attributes, images and search."""

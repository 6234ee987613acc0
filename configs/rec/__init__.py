"""Recommendation configs (SETRec set identifiers vs ordered RQ semantic IDs)."""

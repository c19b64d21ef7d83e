"""The capacity and efficiency study of issue 15 (stage y, equal training compute per variant)."""

"""Test tier package: keeps module names unique across tiers."""

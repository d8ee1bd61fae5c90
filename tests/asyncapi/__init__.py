"""The AsyncAPI document checked by the official parser (tests/test_asyncapi.py)."""

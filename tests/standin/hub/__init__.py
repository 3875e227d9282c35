"""A stand-in for the Hugging Face hub's download API (test tooling; see README.md)."""

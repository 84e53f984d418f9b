"""TFDS dataset builders (one folder per dataset) and the shared feature schema."""

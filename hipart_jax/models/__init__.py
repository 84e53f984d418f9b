"""Flax linen modules of HiPART: MSST tokenizer, HiARM generator, lifter."""
